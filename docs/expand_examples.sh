#!/usr/bin/env bash
# Regenerates the expand_net examples in README.md: each command, then what it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
run() { echo "\$ tools/expand_net.py $*"; python3 tools/expand_net.py "$@" -o "$out" --force 2>&1 | sed "s|$out|out|g"; echo; }
run --template lenet --replicate conv2=3 --add-activation relu --dropin-length 1000
run --template cifar10_quick --replicate conv2=2 --add-activation relu --dropin-length 2000 --stagger 500
run --template cifar10_full --replicate conv3=2 --dropin-length 2000 --no-dropin
run --template alexnet --replicate conv3=1 --replicate conv4=1 --regularize drop6=0.5 --dropin-length 10000
run --template vgg11 --replicate conv5_2=1 --dropin-length 20000
run --template vgg16 --replicate conv5_3=2 --dropin-length 20000 --p-top
rm -rf "$out"
