#!/usr/bin/env bash
# The larger English text for perplexity comparisons: every regular file of
# /usr/share/common-licenses, in name order, concatenated (the symlinks GFDL,
# GPL and LGPL are skipped: they repeat GFDL-1.3, GPL-3 and LGPL-3).
#
#   scripts/licenses-text.sh OUT.txt
#
# Debian 13's base-files gives 235,527 bytes (15 files), 54,048 tokens with
# the default model's vocabulary: 105 chunks of 512 (26,880 scored tokens),
# against the GPL-3's 14.
set -euo pipefail
out=${1:?usage: scripts/licenses-text.sh OUT.txt}
find /usr/share/common-licenses -maxdepth 1 -type f -print0 | sort -z | xargs -0 cat > "$out"
echo "$out: $(wc -c < "$out") bytes from $(find /usr/share/common-licenses -maxdepth 1 -type f | wc -l) files" >&2
