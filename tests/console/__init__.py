"""Tests of the marketers' web console (`tailor serve --console-port`): end to end in a real browser (Debian's
chromium through chromium-driver, driven by selenium) against a real server with API keys."""
