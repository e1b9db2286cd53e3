#!/usr/bin/env bash
# Stage II: a Wikipedia dump to BERT's text format (one sentence per line, a
# blank line after every article).
#
#   extract.sh DUMP OUT_FOLDER [TEXT_FILE]
#
# 1. Runs WikiExtractor (the `wikiextractor` package from PyPI) on DUMP with
#    the options that suit BERT: JSON lines (the title stays out of the text),
#    section headings left out of the text (by WikiExtractor's own Extractor,
#    see wikiextractor_without_headings.py), one process per core,
#    bz2-compressed output files, empty pages (redirects) discarded, and
#    templates expanded from the definitions in the dump itself (no network:
#    templates built on Lua modules expand to nothing). The template
#    definitions are cached in OUT_FOLDER.templates so that a rerun skips the
#    first pass over the dump: written as OUT_FOLDER.templates.partial and
#    renamed when WikiExtractor succeeded, with
#    OUT_FOLDER.templates.made_from.txt naming the dump (path, size,
#    modification time) and WikiExtractor's version. A cache made from
#    anything else, or without that record (an older extract.sh's, perhaps
#    cut short), is made again.
#    The output appears under OUT_FOLDER only when WikiExtractor succeeded
#    and extracted at least one article, with OUT_FOLDER/made_from.txt
#    saying what it was made from (the dump's path, size and modification
#    time, the extractor and its options). An existing OUT_FOLDER made from
#    the same is taken as done and not extracted again; one made from
#    anything else stops the script with an error (delete OUT_FOLDER to
#    extract again). WikiExtractor's messages go to
#    OUT_FOLDER.partial/wikiextractor.log (OUT_FOLDER/wikiextractor.log once
#    done); when it fails, one error line gives the cause and names the log.
# 2. With TEXT_FILE: runs extract_jsons.py on OUT_FOLDER to write TEXT_FILE,
#    with PROCESSES workers.
#
# Environment: PYTHON (default python), PROCESSES (default: all cores),
# BYTES (WikiExtractor's size of one output file before compression, default
# 1M; each extract_jsons.py worker holds one such file in memory).
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 DUMP OUT_FOLDER [TEXT_FILE]" >&2
  exit 2
fi
DUMP=$1
OUT=${2%/}
TEXT_FILE=${3:-}
PYTHON=${PYTHON:-python}
PROCESSES=${PROCESSES:-$(nproc 2>/dev/null || echo 1)}
BYTES=${BYTES:-1M}
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ ! -f "$DUMP" ]]; then
  echo "error: dump $DUMP not found (download e.g. enwiki-latest-pages-articles.xml.bz2)" >&2
  exit 1
fi
if [[ ! -s "$DUMP" ]]; then
  echo "error: dump $DUMP is empty" >&2
  exit 1
fi

# A python without the package is mostly a virtual environment not
# activated: say so, instead of the import's traceback.
if ! command -v "$PYTHON" >/dev/null; then
  echo "error: PYTHON=$PYTHON: no such command; set PYTHON to the python of the project's virtual environment" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("wikiextractor") is None)' 2>/dev/null; then
  echo "error: PYTHON=$PYTHON ($(command -v "$PYTHON")) has no wikiextractor package: activate the project's virtual environment, or set PYTHON to its python (pip install -r requirements.txt installs the package)" >&2
  exit 1
fi
if ! WIKIEXTRACTOR_VERSION=$("$PYTHON" -c 'from wikiextractor import WikiExtractor; print(WikiExtractor.__version__)' 2>&1); then
  echo "error: PYTHON=$PYTHON cannot import wikiextractor: $(tail -n 1 <<<"$WIKIEXTRACTOR_VERSION")" >&2
  exit 1
fi

# What OUT is made from: the dump's identity and the extraction's options.
DUMP_IDENTITY="dump $(realpath "$DUMP")
size $(stat -c %s "$DUMP")
mtime $(stat -c %Y "$DUMP")"
MADE_FROM="$DUMP_IDENTITY
extractor wikiextractor_without_headings.py --json --compress --discard_empty (wikiextractor $WIKIEXTRACTOR_VERSION)"
# What the template cache is made from: the dump (the other options do not
# change which definitions WikiExtractor saves) and the version that saved
# them.
TEMPLATES="$OUT.templates"
TEMPLATES_MADE_FROM="$DUMP_IDENTITY
extractor wikiextractor $WIKIEXTRACTOR_VERSION --templates"

# Whether WikiExtractor's output folder $1 holds an article: a wiki_* file
# with something in it. For a file that is not a MediaWiki dump,
# WikiExtractor succeeds and writes empty ones.
holds_an_article() {
  "$PYTHON" - "$1" <<'PY'
import bz2, glob, os, sys
for path in glob.glob(os.path.join(glob.escape(sys.argv[1]), "*", "wiki_*")):
  with open(path, "rb") as f:
    opener = bz2.open if f.read(3) == b"BZh" else open
  with opener(path, "rb") as f:
    if f.read(1).strip():
      sys.exit(0)
sys.exit(1)
PY
}

if [[ -d "$OUT" ]]; then
  if [[ ! -f "$OUT/made_from.txt" ]]; then
    echo "error: $OUT has no made_from.txt: it was not extracted by this script (an older one left section headings in its text); delete it to extract again" >&2
    exit 1
  fi
  if [[ "$(cat "$OUT/made_from.txt")" != "$MADE_FROM" ]]; then
    echo "error: $OUT was extracted from another dump or with other options (see $OUT/made_from.txt); delete it to extract again" >&2
    exit 1
  fi
  echo "extract.sh: $OUT exists, made from $DUMP as now: WikiExtractor skipped (delete it to extract again)"
else
  PARTIAL="$OUT.partial"
  LOG="$PARTIAL/wikiextractor.log"
  rm -rf "$PARTIAL" "$TEMPLATES.partial"
  mkdir -p "$PARTIAL"
  # A cache is used only when complete (renamed once WikiExtractor
  # succeeded) and made from this dump: a cut-short one, or another dump's,
  # silently drops the text of every template it lacks.
  if [[ -f "$TEMPLATES" && -f "$TEMPLATES.made_from.txt" &&
        "$(cat "$TEMPLATES.made_from.txt")" == "$TEMPLATES_MADE_FROM" ]]; then
    echo "extract.sh: template definitions from $TEMPLATES (made from $DUMP as now)"
    TEMPLATES_ARG=$TEMPLATES
  else
    if [[ -e "$TEMPLATES" ]]; then
      echo "extract.sh: $TEMPLATES was made from another dump or by an interrupted run: made again"
    fi
    rm -f "$TEMPLATES" "$TEMPLATES.made_from.txt"
    TEMPLATES_ARG=$TEMPLATES.partial
  fi
  echo "extract.sh: WikiExtractor $DUMP -> $OUT ($PROCESSES processes; its log: $LOG)"
  status=0
  "$PYTHON" "$HERE/wikiextractor_without_headings.py" \
      --json \
      --compress \
      --discard_empty \
      --processes "$PROCESSES" \
      --bytes "$BYTES" \
      --templates "$TEMPLATES_ARG" \
      --output "$PARTIAL" \
      "$DUMP" 2>"$LOG" || status=$?
  if (( status != 0 )); then
    rm -f "$TEMPLATES.partial"
    # The cause: a signal, else the last line that is not progress (the
    # exception ending a traceback, or the wrapper's own error line).
    if (( status > 128 )); then
      cause="killed by signal $(( status - 128 ))"
    else
      cause=$(grep -v '^INFO: ' "$LOG" | grep . | tail -n 1 || true)
      cause=${cause#error: }
      cause=${cause:-exit status $status}
    fi
    echo "error: WikiExtractor failed on $DUMP: $cause (its log: $LOG)" >&2
    exit 1
  fi
  if [[ "$TEMPLATES_ARG" != "$TEMPLATES" ]]; then
    # The record first: a cache without one is made again.
    echo "$TEMPLATES_MADE_FROM" > "$TEMPLATES.made_from.txt"
    mv "$TEMPLATES.partial" "$TEMPLATES"
  fi
  if ! holds_an_article "$PARTIAL"; then
    echo "error: $DUMP holds no article: WikiExtractor found no page with text in it; is it a MediaWiki XML dump such as enwiki-latest-pages-articles.xml.bz2? (its log: $LOG)" >&2
    exit 1
  fi
  echo "$MADE_FROM" > "$PARTIAL/made_from.txt"
  mv "$PARTIAL" "$OUT"
fi

if [[ -n "$TEXT_FILE" ]]; then
  "$PYTHON" "$HERE/extract_jsons.py" --folder "$OUT" --write_file "$TEXT_FILE" \
      --num_workers "$PROCESSES"
fi
