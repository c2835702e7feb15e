#!/usr/bin/env bash
# Print the path of a kotlinc that compiles android_demo/core, installing it if needed.
#
# kotlinc comes from the npm registry's `kotlin-compiler` package (a full JVM kotlinc, run with the
# machine's JDK 17+), installed into the git-ignored .tools/kotlin-<version>/ of the repository.
# The version must equal `kotlin` in android_demo/gradle/libs.versions.toml (a test checks this).
#   scripts/kotlin.sh            -> prints /…/.tools/kotlin-2.2.21/node_modules/kotlin-compiler/bin/kotlinc
# Exit status: 0 with the path on stdout; 1 with the reason on stderr (no java, no npm, install failed).
set -euo pipefail

KOTLIN_VERSION="${KOTLIN_VERSION:-2.2.21}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${KOTLIN_TOOLS_DIR:-$ROOT/.tools}/kotlin-$KOTLIN_VERSION"
KOTLINC="$PREFIX/node_modules/kotlin-compiler/bin/kotlinc"

if ! command -v java >/dev/null 2>&1; then
    echo "kotlin.sh: java is not installed (need a JDK 17 or newer)" >&2
    exit 1
fi
if [ ! -x "$KOTLINC" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "kotlin.sh: npm is not installed; cannot fetch kotlin-compiler@$KOTLIN_VERSION" >&2
        exit 1
    fi
    mkdir -p "$PREFIX"
    if ! npm install --silent --no-audit --no-fund --prefix "$PREFIX" \
            "kotlin-compiler@$KOTLIN_VERSION" >&2; then
        echo "kotlin.sh: npm install kotlin-compiler@$KOTLIN_VERSION failed" >&2
        exit 1
    fi
    if [ ! -x "$KOTLINC" ]; then
        echo "kotlin.sh: $KOTLINC missing after npm install" >&2
        exit 1
    fi
fi
echo "$KOTLINC"
