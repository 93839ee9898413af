"""Browser tests: witness journeys driven through the system Chromium with Playwright."""
