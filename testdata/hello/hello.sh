#!/bin/sh
echo "$(cat /app/greeting) from kiln, running as $(id -un) on $(hostname)"
