# Sourced by the ML-100K benchmarks: sets SPLIT to the evaluation split's directory,
# $ML100K_SPLIT (default build/ml100k-split), made by scripts/ml100k_split.py from the
# unzipped MovieLens 100K download at $ML100K_DIR (default ml-100k) when it is not there.
SPLIT=${ML100K_SPLIT:-build/ml100k-split}
if [[ ! -f "$SPLIT/train.tsv" ]]; then
  /usr/bin/python3 scripts/ml100k_split.py --ml100k "${ML100K_DIR:-ml-100k}" --out "$SPLIT" >&2
fi
