"""The monitor: scheduled jobs, stored state, change detection and alerts."""
