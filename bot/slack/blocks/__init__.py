"""Block Kit messages for `/voucher` and the grant status threads, built by pure functions.

Every builder returns a `Message` within Slack's limits (50 blocks, 3,000 characters a text
object) with its notification `text` always set. Everything that comes from data (names,
emails, codes, errors, what a person typed) goes through `escape`, and every mrkdwn text object
is `verbatim`, so a grantee called `<!channel>` or `@here` pings nobody.

`answers` holds what `/voucher` answers the person who ran it, `status` the `/voucher status`
report, `threads` and `thread_state` the grant's thread in the conference channel, `digest`
the daily digest. They share
`_text` (escaping and phrases), `_layout` (blocks, limits, `Message`) and `_outcome_lines`.
`bulk` holds the bulk issuance card (preview, decision, progress), its summary and its CSV.
"""

from bot.services.codes import mask_code, redact_codes
from bot.slack.blocks._layout import (
    BULK_APPROVE_ACTION,
    BULK_REJECT_ACTION,
    BULK_RETRY_FAILED_ACTION,
    FALLBACK_LIMIT,
    FIELD_LIMIT,
    HELD_DISMISS_ACTION,
    HELD_ISSUE_ACTION,
    LEGACY_RETRY_ACTION,
    MAX_BLOCKS,
    MAX_CONTEXT_ELEMENTS,
    MAX_FIELDS,
    RETRY_ACTION,
    REVOKE_ACTION,
    TEXT_LIMIT,
    Block,
    Message,
)
from bot.slack.blocks._outcome_lines import Outcome
from bot.slack.blocks._text import COMMAND, DETAIL_LIMIT, escape, redact_payload, truncate
from bot.slack.blocks.answers import (
    error_message,
    help_message,
    not_staff_message,
    problem_message,
    provision_result_message,
    resend_result_message,
    revoke_result_message,
    unknown_subcommand_message,
    unresolved_text,
    working_message,
)
from bot.slack.blocks.bulk import (
    BulkCard,
    BulkCounts,
    BulkGrantee,
    BulkPhase,
    BulkReport,
    approvers_mention,
    bulk_already_decided_message,
    bulk_card_message,
    bulk_command_answer,
    bulk_preview_csv,
    bulk_refusal_message,
    bulk_summary_message,
    bulk_working_message,
    progress_bar,
    wants_csv,
)
from bot.slack.blocks.decisions import (
    DISMISS_REASON_BLOCK,
    DISMISS_REASON_INPUT,
    DISMISS_VIEW,
    actor_mention,
    dismiss_modal,
    dismiss_reason,
    held_buttons,
    held_line,
    held_result_message,
    revoke_button,
)
from bot.slack.blocks.digest import (
    DigestRendering,
    digest_cut,
    digest_file_comment,
    digest_message,
    digest_not_posted_message,
    digest_posted_message,
    digest_working_message,
    render_digest,
)
from bot.slack.blocks.drift import drift_message, drift_working_message
from bot.slack.blocks.home import MAX_HOME_BLOCKS, home_view
from bot.slack.blocks.status import status_message
from bot.slack.blocks.thread_state import parent_state
from bot.slack.blocks.threads import intake_reply, thread_parent, thread_reply

__all__ = [
    "BULK_APPROVE_ACTION",
    "BULK_REJECT_ACTION",
    "BULK_RETRY_FAILED_ACTION",
    "COMMAND",
    "DETAIL_LIMIT",
    "DISMISS_REASON_BLOCK",
    "DISMISS_REASON_INPUT",
    "DISMISS_VIEW",
    "FALLBACK_LIMIT",
    "FIELD_LIMIT",
    "HELD_DISMISS_ACTION",
    "HELD_ISSUE_ACTION",
    "LEGACY_RETRY_ACTION",
    "MAX_BLOCKS",
    "MAX_CONTEXT_ELEMENTS",
    "MAX_FIELDS",
    "MAX_HOME_BLOCKS",
    "RETRY_ACTION",
    "REVOKE_ACTION",
    "TEXT_LIMIT",
    "Block",
    "BulkCard",
    "BulkCounts",
    "BulkGrantee",
    "BulkPhase",
    "BulkReport",
    "DigestRendering",
    "Message",
    "Outcome",
    "actor_mention",
    "approvers_mention",
    "bulk_already_decided_message",
    "bulk_card_message",
    "bulk_command_answer",
    "bulk_preview_csv",
    "bulk_refusal_message",
    "bulk_summary_message",
    "bulk_working_message",
    "digest_cut",
    "digest_file_comment",
    "digest_message",
    "digest_not_posted_message",
    "digest_posted_message",
    "digest_working_message",
    "dismiss_modal",
    "dismiss_reason",
    "drift_message",
    "drift_working_message",
    "error_message",
    "escape",
    "held_buttons",
    "held_line",
    "held_result_message",
    "help_message",
    "home_view",
    "intake_reply",
    "mask_code",
    "not_staff_message",
    "parent_state",
    "problem_message",
    "progress_bar",
    "provision_result_message",
    "redact_codes",
    "redact_payload",
    "render_digest",
    "resend_result_message",
    "revoke_button",
    "revoke_result_message",
    "status_message",
    "thread_parent",
    "thread_reply",
    "truncate",
    "unknown_subcommand_message",
    "unresolved_text",
    "wants_csv",
    "working_message",
]
