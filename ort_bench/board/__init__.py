"""Scores -> tables: submissions that need no trust, audits, the leaderboard and its page."""
