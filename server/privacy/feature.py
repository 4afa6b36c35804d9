"""PrivacyFeature ("privacy"): a user's data — export and erasure."""

from __future__ import annotations

from server.feature import Feature


class PrivacyFeature(Feature):
    name = "privacy"
