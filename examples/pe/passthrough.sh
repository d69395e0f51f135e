#!/bin/sh
# A Weir exec PE in lines mode: answers every line with itself (records unchanged).
# `printf` is a shell builtin writing straight to stdout, so each answer is flushed.
while IFS= read -r line; do
    printf '%s\n' "$line"
done
