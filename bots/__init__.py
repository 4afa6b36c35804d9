"""Telegram bot (aiogram): admin commands, account linking, daily brief and alerts."""
