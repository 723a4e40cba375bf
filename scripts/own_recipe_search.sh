#!/usr/bin/env bash
# Choose the fine-tuning recipe of the own (SOTU-pretrained) encoder for
# benchmarks/domain_adaptation.py on SOURCE-domain data only: train on source_train, score on
# the labelled source_test split (20NG test-split texts of the *source* sub-groups). Target
# labels are never read. Each run is one `lanistr finetune`, one thread; a finished run is
# skipped on a rerun. Writes every finished run of WORK to
# benchmarks/results/domain_adaptation_own_recipe.tsv.
#
#   scripts/own_recipe_search.sh [TASK ...]          (default: comp_rec sci_talk)
#   RECIPES="5e-4:300:true 1e-3:300:true" scripts/own_recipe_search.sh comp_rec
#
# A recipe is LR:STEPS:FREEZE_EMBEDDINGS (batch 8, max_len 128, warmup 10 %, as in the benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OWN=${OWN:-runs/sotu-mini/model}
SPLITS=${SPLITS:-runs/domain_adaptation/splits}
WORK=${WORK:-runs/own_recipe_search}
RECIPES=${RECIPES-"5e-4:60:true 5e-4:300:true 1e-3:300:true 1e-3:300:false 2e-3:300:false"}
OUT=benchmarks/results/domain_adaptation_own_recipe.tsv
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(comp_rec sci_talk)
for task in "${tasks[@]}"; do
  for spec in $RECIPES; do
    IFS=: read -r lr steps frz <<< "$spec"
    out=$WORK/$task/lr$lr-s$steps-f$frz
    [ -f "$out/test_metrics.json" ] && continue
    mkdir -p "$WORK/$task"
    d=$SPLITS/$task
    start=$(date +%s)
    "$PY" -m lanistr finetune --overwrite --output "$out" --set task=classify --set "init=$OWN" \
      --set "data.train=$d/source_train.jsonl" --set "data.test=$d/source_test.jsonl" \
      --set data.max_len=128 --set "finetune.freeze_embeddings=$frz" \
      --set "train.max_steps=$steps" --set train.epochs=0 --set train.batch_size=8 \
      --set "train.lr=$lr" --set train.warmup_ratio=0.1 --set train.num_threads=1 \
      --set train.eval_every=0 --set train.save_every=10000 --set train.progress=false \
      > "$out.log" 2>&1
    echo $(( $(date +%s) - start )) > "$out/wall_s"
    rm -rf "$out/model" "$out/checkpoints"
  done
done
{
  printf 'task\tlr\tsteps\tfreeze_embeddings\tsource_test_accuracy\tlast_train_loss\twall_s\n'
  for run in "$WORK"/*/lr*; do
    [ -f "$run/test_metrics.json" ] || continue
    name=$(basename "$run"); lr=${name#lr}; lr=${lr%%-s*}; steps=${name#*-s}; steps=${steps%%-f*}
    acc=$("$PY" -c "import json,sys; print(round(json.load(open(sys.argv[1]))['accuracy'], 4))" "$run/test_metrics.json")
    loss=$(grep ',loss,' "$run/metrics.csv" | tail -1 | cut -d, -f3)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(basename "$(dirname "$run")")" "$lr" "$steps" \
      "${name##*-f}" "$acc" "$loss" "$(cat "$run/wall_s" 2>/dev/null || echo -)"
  done
} > "$OUT"
cat "$OUT"
