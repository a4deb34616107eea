#!/usr/bin/env bash
# Refresh the NiiVue bundle that the review page ships (medseg/reporting/static/niivue.umd.js) from the npm
# registry, with NiiVue's licence and those of the packages its bundle includes.
# Usage: bash scripts/vendor_niivue.sh [VERSION]     (needs npm and node; run by hand, never by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-0.69.0}"
static="$(pwd)/medseg/reporting/static"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "@niivue/niivue@$version" >/dev/null
tar xzf "niivue-niivue-$version.tgz"
cp package/dist/niivue.umd.js "$static/niivue.umd.js"
cat > "$static/NIIVUE_LICENSE.txt" <<TEXT
NiiVue $version (https://github.com/niivue/niivue): dist/niivue.umd.js of the npm package @niivue/niivue,
vendored unmodified by scripts/vendor_niivue.sh; sha256 $(sha256sum package/dist/niivue.umd.js | cut -d' ' -f1).
The packages bundled inside it are listed, with their licences, in THIRD_PARTY_LICENSES.txt.

BSD 2-Clause License

Copyright (c) 2021, Niivue
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
TEXT
deps=$(node -e "console.log(Object.entries(require('./package/package.json').dependencies).map(([n, v]) => n + '@' + v).join(' '))")
{
  echo "Packages bundled inside niivue.umd.js (NiiVue $version's dependencies, as resolved when it was vendored):"
  for dep in $deps; do
    rm -rf package ./*.tgz
    npm pack --silent "$dep" >/dev/null
    tar xzf ./*.tgz
    echo
    echo "=== $(node -e "const p = require('./package/package.json'); console.log(p.name + ' ' + p.version + ' (' + p.license + ')')")"
    cat package/LICENSE* package/license* package/LICENCE* 2>/dev/null || echo "(no licence file in the package)"
  done
} > "$static/THIRD_PARTY_LICENSES.txt"
echo "NiiVue $version -> $static/niivue.umd.js ($(du -h "$static/niivue.umd.js" | cut -f1))"
