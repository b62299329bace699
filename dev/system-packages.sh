#!/usr/bin/env bash
# What `make test` and `make demo` need from the machine beside Python, installed when missing:
# Java and the Google Cloud CLI's Pub/Sub emulator (the streaming tests and the demo's live step),
# Chromium with its driver (the report page is opened headless by the tests) and a CJK font (the
# report's charts draw Chinese text). Debian packages only; nothing is downloaded at run time.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
if [ "${1:-}" = "test" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
fc-list 2>/dev/null | grep -qi "noto sans cjk" || need+=(fonts-noto-cjk)
if ! command -v gcloud >/dev/null 2>&1; then
  need+=(google-cloud-cli google-cloud-cli-pubsub-emulator)
elif [ ! -d "$(dirname "$(dirname "$(readlink -f "$(command -v gcloud)")")")/platform/pubsub-emulator" ]; then
  need+=(google-cloud-cli-pubsub-emulator)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
