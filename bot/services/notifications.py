"""Inbound notification shapes (webhook bodies and import rows), as CONTRACT.md defines them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

from bot.storage import GrantStatus

KNOWN_STATUSES = frozenset(status.value for status in GrantStatus)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_to_none(cls, data: Any) -> Any:
        # CSV cells are never missing, only empty; an empty cell means "not given".
        if isinstance(data, dict):
            return {key: (None if value == "" else value) for key, value in data.items()}
        return data


class GrantPayload(_Payload):
    """A grant as the conference backend describes it (webhook `grant`, or one import row)."""

    id: str = Field(min_length=1, max_length=64)
    conference: str = Field(min_length=1, max_length=50)
    full_name: str = Field(min_length=1, max_length=300)
    email: EmailStr | None = None
    status: str = Field(min_length=1, max_length=40)
    previous_status: str | None = Field(default=None, max_length=40)
    applicant_reply_sent_at: AwareDatetime | None = None
    applicant_reply_deadline: AwareDatetime | None = None
    updated_at: AwareDatetime
    slack_user_id: str | None = Field(default=None, pattern=r"^[UW][A-Z0-9]{2,30}$")
    admin_url: str | None = Field(default=None, max_length=2000)
    reimbursements: list[Any] | None = None
    approved_type: str | None = Field(default=None, max_length=40)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _confirmed_needs_email(self) -> GrantPayload:
        if self.status == GrantStatus.CONFIRMED and not self.email:
            raise ValueError("a confirmed grant needs an email address")
        return self

    @property
    def known_status(self) -> GrantStatus | None:
        """The status, or None when the backend sent one this bot does not know."""
        return GrantStatus(self.status) if self.status in KNOWN_STATUSES else None

    @property
    def email_key(self) -> str | None:
        """The address as compared: one person, whatever the case they typed it in."""
        return self.email.strip().lower() if self.email else None


class VoucherPayload(_Payload):
    """A voucher made elsewhere (usually a speaker voucher), from the webhook or an import."""

    conference: str = Field(min_length=1, max_length=50)
    email: EmailStr
    type: Literal["speaker", "co_speaker", "grant"]
    code: str = Field(min_length=5, max_length=255)
    pretix_voucher_id: int | None = Field(default=None, ge=1)
    email_sent_at: AwareDatetime | None = None

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()  # Pretix stores codes upper-cased

    @property
    def email_key(self) -> str:
        """The address as compared."""
        return self.email.strip().lower()


class WebhookEvent(BaseModel):
    """The envelope of a `POST /hooks/grants` body."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    type: Literal["grant.updated", "voucher.updated"]
    occurred_at: AwareDatetime
    grant: GrantPayload | None = None
    voucher: VoucherPayload | None = None

    @property
    def conference(self) -> str:
        """The conference the event is about."""
        body = self.grant or self.voucher
        assert body is not None  # the validator below makes sure one is there
        return body.conference

    @model_validator(mode="after")
    def _body_matches_type(self) -> WebhookEvent:
        if self.type == "grant.updated" and self.grant is None:
            raise ValueError("a grant.updated event needs a `grant` object")
        if self.type == "voucher.updated" and self.voucher is None:
            raise ValueError("a voucher.updated event needs a `voucher` object")
        return self
