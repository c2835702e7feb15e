#!/usr/bin/env bash
# Reference run on one GPU: training throughput, then teacher, KD student and no-KD student on
# real HAM10000 at 224 px from scratch (the reference recipe). Prints figures; copies the
# small results to $OUT (or ./runs/gpu_reference).
#   DATA=path/to/ham10000 EPOCHS=40 bash scripts/gpu_reference.sh
set -uo pipefail
DATA=${DATA:-../shared/data/ham10000}
EPOCHS=${EPOCHS:-40}
SIZE=${SIZE:-224}
BS=${BS:-128}
ARCH_T=${ARCH_T:-resnet34}
ARCH_S=${ARCH_S:-mobilenet_v3_small}
WORK=${WORK:-/tmp/edgekd_gpu}
OUT=${OUT:-runs/gpu_reference}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD
mkdir -p "$WORK" "$OUT"
log() { echo "== $(date +%T) $*"; }
common=(--data-dir "$DATA" --prepared-dir "$WORK/prepared" --image-size "$SIZE" --batch-size "$BS"
        --epochs "$EPOCHS" --patience 10 --seed 42 ${EXTRA:-})

log "environment"; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
log "throughput"
[ "${SPEED:-1}" = 0 ] || $PY -m benchmarks.studies.train_speed --image-size "$SIZE" --batch-size "$BS" --steps ${SPEED_STEPS:-30} \
    --repeats 3 --teacher "$ARCH_T" --student "$ARCH_S" 2>"$WORK/speed.err" | tee "$OUT/speed.txt"
log "teacher"
$PY -m kd_core.train teacher "${common[@]}" --architecture "$ARCH_T" --lr 2e-3 \
    --out "$WORK/teacher" 2>"$WORK/teacher.err" | grep -v '^epoch [0-9]*/' ; tr "\r" "\n" < "$WORK/teacher.err" | tail -3
log "student, KD"
$PY -m kd_core.train student "${common[@]}" --student-arch "$ARCH_S" --lr 3e-3 \
    --teacher-ckpt "$WORK/teacher/best.pth" --temperature 2 --alpha 0.5 \
    --out "$WORK/student_kd" 2>"$WORK/student_kd.err" | grep -v '^epoch [0-9]*/'; tr "\r" "\n" < "$WORK/student_kd.err" | tail -3
log "student, no KD"
$PY -m kd_core.train student "${common[@]}" --student-arch "$ARCH_S" --lr 3e-3 --alpha 0 \
    --out "$WORK/student_nokd" 2>"$WORK/student_nokd.err" | grep -v '^epoch [0-9]*/'; tr "\r" "\n" < "$WORK/student_nokd.err" | tail -3
log "collect"
for run in teacher student_kd student_nokd; do
  cp "$WORK/$run/metrics.json" "$OUT/${run}_metrics.json" 2>/dev/null
  cp "$WORK/$run/history.csv" "$OUT/${run}_history.csv" 2>/dev/null
done
cp "$WORK/student_kd/best.pth" "$OUT/student_kd_best.pth" 2>/dev/null
log "done"
