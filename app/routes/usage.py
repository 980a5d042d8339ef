"""Summing usage events for /v1/usage and the admin usage routes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.schemas import UsageGroup, UsageResponse
from store.accounts import AccountStore


async def summarize(accounts: AccountStore, account_id: str, start: datetime | None, end: datetime | None,
                    group_by: str) -> UsageResponse:
    end_s = end.timestamp() if end else time.time()
    start_s = start.timestamp() if start else end_s - 30 * 86400
    groups: dict[str, UsageGroup] = {}
    total = UsageGroup(group="total", jobs=0, images=0, megapixels=0.0, credits=0)
    # Stream ids are unsigned: a time before 1970 (from=1900-01-01) would be an invalid id, a 500.
    async for event in accounts.usage(account_id, max(0, int(start_s * 1000)), max(0, int(end_s * 1000))):
        fields = event.fields
        if group_by == "variant":
            name = fields["variant"]
        else:
            name = datetime.fromtimestamp(float(fields["finished_at"]), UTC).strftime("%Y-%m-%d")
        for bucket in (groups.setdefault(name, UsageGroup(group=name, jobs=0, images=0, megapixels=0.0,
                                                          credits=0)), total):
            bucket.jobs += 1
            bucket.images += int(fields["images"])
            bucket.megapixels = round(bucket.megapixels + float(fields["megapixels"]), 6)
            bucket.credits += int(fields["credits"])
    return UsageResponse(account=account_id, start=start_s, end=end_s, group_by=group_by,
                         groups=sorted(groups.values(), key=lambda g: g.group), total=total)
