#!/usr/bin/env bash
# The chat page's end-to-end test in headless Chromium (crates/cli/tests/
# webui_browser.rs), with a missing browser made a failure instead of a
# loud skip. Installs Debian's chromium and chromium-driver if absent.
# SCREENSHOT=docs/webui.png also saves the page as a PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
export CRIA_REQUIRE_BROWSER=1
if [ -n "${SCREENSHOT:-}" ]; then
  export CRIA_WEBUI_SCREENSHOT="$PWD/$SCREENSHOT"
fi
cargo test --release -p cria --test webui_browser -- --nocapture
