#!/usr/bin/env bash
# Instructions per scored message, counted by valgrind (callgrind), for one
# or more sluice binaries side by side. On this shared 2-core box the
# msg/s and CPU-time figures of spam.sh move by 10-30 % between runs and
# between hours; instruction counts do not move, so a change to the
# content pipeline can be judged by them (and then confirmed by spam.sh).
#
# For each message set, `sluice scan --offline` runs over N messages and
# over 2N (the same messages twice); the difference divided by N is the cost
# of a warm message: rule compilation, the model load and the lazy DFA's
# first states are left out, as in the long-running daemon. Printed per
# binary and set: inclusive thousands of instructions of the pipeline's
# parts (whole scan, spam scoring, rules, tokenizer, classifier, the n-gram
# classifier's features and sum, view, MIME scanner).
#
# Sets: the shared SpamAssassin sample (all folders), and smtp-source's
# 4 KiB and 64 KiB messages (numbered lines of X, as spam.sh sends them).
# The classifier is trained now on the same sample (not kept).
#
#   BINS="base=/tmp/sluice.old new=target/release/sluice" benches/spam_instructions.sh
#   env: BINS (new=target/release/sluice)  OUT (/tmp/sluice-instr)
#        CORPUS ($ROOT/../shared/corpora/spamassassin)  SYN (20: smtp-source messages per set)
# Needs valgrind (apt-get install valgrind). About 2 minutes per binary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sluice-instr}
CORPUS=${CORPUS:-$ROOT/../shared/corpora/spamassassin}
BINS=${BINS:-new=$ROOT/target/release/sluice}
SYN=${SYN:-20}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"

# Message sets: corpus once and twice; each synthetic message N and 2N times.
mkdir -p "$OUT/corpus1" "$OUT/corpus2"
n=0
for d in easy_ham easy_ham_2 hard_ham spam spam_2; do
  for f in "$CORPUS/$d"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    cp "$f" "$OUT/corpus1/$n"; cp "$f" "$OUT/corpus2/$n"; cp "$f" "$OUT/corpus2/$n.again"
  done
done
python3 - "$OUT" "$SYN" <<'PY'
import os, sys
out, n = sys.argv[1], int(sys.argv[2])
for size in (4096, 65536):
    body = ''.join('%05d %s\r\n' % (i, 'X' * 72) for i in range(size // 80))
    msg = ('From: <sender@example.net>\r\nTo: <user0500@example.com>\r\n'
           'Date: Mon, 7 Dec 2026 17:00:00 +0000\r\nMessage-Id: <1.2@example.net>\r\n'
           'Subject: test\r\n\r\n' + body)
    for k, count in ((1, n), (2, 2 * n)):
        d = os.path.join(out, 'syn%d-%d' % (size // 1024, k))
        os.makedirs(d, exist_ok=True)
        for i in range(count):
            open(os.path.join(d, str(i)), 'w').write(msg)
PY
first=${BINS%% *}; first=${first#*=}
"$first" learn --rebuild -o "$OUT/bayes.model" \
  --spam "$CORPUS/spam" --spam "$CORPUS/spam_2" \
  --ham "$CORPUS/easy_ham" --ham "$CORPUS/easy_ham_2" --ham "$CORPUS/hard_ham" >/dev/null

# Inclusive instructions per function of a callgrind output.
cat > "$OUT/incl.py" <<'PY'
import re, subprocess, sys
def load(f):
    out = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100', f],
                         capture_output=True, text=True).stdout
    d = {}
    for l in out.splitlines():
        m = re.match(r'\s*([\d,]+) \([^)]*\)\s+\S+?:(.*) \[', l)
        if m:
            d[m.group(2)] = d.get(m.group(2), 0) + int(m.group(1).replace(',', ''))
    return d
a, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
parts = [
    ('whole scan', r'sluice::scan_cli::run::\{\{closure\}\}'),
    ('spam scoring', r'sluice::spam::filter::SpamFilter::evaluate'),
    ('rules', r'sluice::spam::rules::RuleSet::evaluate'),
    ('tokenizer', r'sluice::spam::tokenize::(walk|text_tokens)$'),
    ('classifier', r'sluice::spam::bayes::Model::classify(_list|_with)?$'),
    ('n-gram features', r'sluice::spam::ngram::Features::of'),
    ('n-gram classify', r'sluice::spam::ngram::Ngram::classify'),
    ('view', r'sluice::spam::view::MessageView::from_message'),
    ('MIME scanner', r'sluice::scan::mime::analyse'),
]
for label, pat in parts:
    keys = [k for k in b if re.fullmatch(pat, k) or re.search(pat + '$', k)]
    if not keys:
        continue
    k = max(keys, key=lambda k: b.get(k, 0))
    print('  %-14s %8.0f k' % (label, (b.get(k, 0) - a.get(k, 0)) / n / 1000))
PY

for spec in $BINS; do
  name=${spec%%=*}; bin=${spec#*=}
  for set in "corpus1 corpus2 $n corpus ($n messages)" "syn4-1 syn4-2 $SYN smtp-source 4 KiB" "syn64-1 syn64-2 $SYN smtp-source 64 KiB"; do
    read -r one two count label <<<"$set"
    for d in "$one" "$two"; do
      valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$name.$d" \
        "$bin" scan --offline --json --bayes-model "$OUT/bayes.model" "$OUT/$d" >/dev/null 2>&1 || true
    done
    echo "== $name: $label, instructions per warm message"
    python3 "$OUT/incl.py" "$OUT/cg.$name.$one" "$OUT/cg.$name.$two" "$count"
  done
done
