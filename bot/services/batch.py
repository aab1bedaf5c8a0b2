"""Provision many grants at once on a small thread pool (imports, bulk runs, the reconciler)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from bot.services.actors import Actor
from bot.services.context import ServiceContext
from bot.services.outcomes import ProvisionOutcome
from bot.services.provisioning import provision_grant_voucher


def provision_many(
    ctx: ServiceContext,
    *,
    grant_ids: Sequence[int],
    actor: Actor,
    workers: int = 4,
    release_hold: bool = False,
    on_progress: Callable[[ProvisionOutcome], None] | None = None,
) -> list[ProvisionOutcome]:
    """Provision each grant once, `workers` at a time; outcomes come back in input order.

    Each grant goes through the same idempotent service as a single request, so a grant that
    appears twice, or that another process is working on, is never provisioned twice.
    """

    def one(grant_id: int) -> ProvisionOutcome:
        outcome = provision_grant_voucher(
            ctx, grant_id=grant_id, actor=actor, release_hold=release_hold
        )
        if on_progress is not None:
            on_progress(outcome)
        return outcome

    if workers <= 1 or len(grant_ids) <= 1:
        return [one(grant_id) for grant_id in grant_ids]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provision") as pool:
        return list(pool.map(one, grant_ids))
