#!/bin/sh
# The example workload: says where it runs, then prints its arguments and environment.
echo "Hello from $(hostname), a ts-vmm micro-VM running $(uname -sr)"
echo "args:"
for arg in "$@"; do echo "  $arg"; done
echo "env:"
env | sort | sed 's/^/  /'
