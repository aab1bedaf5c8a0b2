"""Voucher bot: issues Pretix vouchers to financial-aid grantees from Slack, safely."""

__version__ = "0.1.0"
