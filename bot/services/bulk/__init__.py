"""Bulk issuance: a preview frozen into a request, four-eyes approval, a fast resumable run.

The public API (edges: the CLI, the Slack listeners; the scheduler):

- `preview_bulk(ctx, *, conference) -> BulkPreview`: read-only; the confirmed, undismissed
  grants of the conference by `Branch` (one rule: `provisioning_rules.decide`, as staff).
  `conference` may be None when only one conference issues vouchers
  (`resolve_conference`; `BulkConferenceError` otherwise).
- `request_bulk(ctx, *, conference, actor, ttl) -> BulkPreview`: freezes the list into a
  `BulkRequest` awaiting approval until now + ttl, with one `BulkItem` per grantee (pending
  when actionable, skipped with why otherwise). Nothing due: nothing stored, `request` None,
  `nothing_to_do` (no buttons).
- `decide_bulk(ctx, *, request_id, actor, approve, allow_self_approval) -> BulkDecision`:
  exactly once (one conditional UPDATE); `DecisionResult` APPROVED, REJECTED,
  SELF_APPROVAL_REFUSED, EXPIRED, ALREADY_DECIDED (`winner`, `request.decided_at`),
  NOT_FOUND. Every outcome is audited; the edge checks staff first.
- `run_bulk(ctx, *, request_id, actor, reporter) -> BulkSummary`: runs an approved request
  (or takes over a crashed run once its lease lapsed, resuming the pending items);
  `reporter: BulkReporter` hears `progress(BulkProgress)` after each chunk of 100 and
  `finished(BulkSummary)` once. Per-grantee threads are not touched.
- `expire_due(ctx) -> list[BulkRef]`: expires awaiting requests past their time (each
  returned once, to edit its message); `resume_stalled(ctx, reporter_for) -> int` runs the
  requests whose runner died. Both are scheduler jobs.
- `retry_failed(ctx, *, request_id, actor, ttl) -> BulkPreview`: a new request (retry_of_id
  set) over a finished run's failed grantees; the same approval rules apply.
- `get_request`, `request_lines` (a request's lines with each state and result, for a CSV),
  `set_slack_message` (where its preview was posted).
"""

from bot.services.bulk.model import (
    ACTIONABLE,
    BRANCH_LABEL,
    PRETIX_WORK,
    Branch,
    BulkConferenceError,
    BulkDecision,
    BulkLine,
    BulkPreview,
    BulkProgress,
    BulkRef,
    BulkReporter,
    BulkSummary,
    DecisionResult,
    NoReporter,
    RunOutcome,
)
from bot.services.bulk.requests import (
    BulkRequestError,
    decide_bulk,
    expire_due,
    get_request,
    preview_bulk,
    request_bulk,
    request_lines,
    resolve_conference,
    retry_failed,
    set_slack_message,
)
from bot.services.bulk.run import RESUMER, resume_stalled, run_bulk, run_lease

__all__ = [
    "ACTIONABLE",
    "BRANCH_LABEL",
    "PRETIX_WORK",
    "RESUMER",
    "Branch",
    "BulkConferenceError",
    "BulkDecision",
    "BulkLine",
    "BulkPreview",
    "BulkProgress",
    "BulkRef",
    "BulkReporter",
    "BulkRequestError",
    "BulkSummary",
    "DecisionResult",
    "NoReporter",
    "RunOutcome",
    "decide_bulk",
    "expire_due",
    "get_request",
    "preview_bulk",
    "request_bulk",
    "request_lines",
    "resolve_conference",
    "resume_stalled",
    "retry_failed",
    "run_bulk",
    "run_lease",
    "set_slack_message",
]
