"""Scheduled jobs: schedules that create board tasks, so a job run gets the board's caps,
claims, retries and failure accounting unchanged (docs/jobs.md)."""
