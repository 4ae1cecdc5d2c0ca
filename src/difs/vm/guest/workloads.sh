# difs guest workloads (sourced by /init; busybox sh). Each prints one result line:
#   DIFS-VERIFY bytes_written=N bytes_read=N verified=N errors=N
# verified counts the bytes read back equal to the pattern; errors counts the MiB whose
# write, read or comparison failed.  The pattern names the seed and the LBA in every
# 512-byte sector, so stale, misplaced or corrupted data never compares equal.

MB=1048576
WRITTEN=0 READ=0 VERIFIED=0 ERRORS=0
DIRECT=1

pattern() {  # pattern SEED MIB: the MiB's 2048 sectors on stdout
    awk -v seed="$1" -v mib="$2" 'BEGIN { for (s = 0; s < 2048; s++)
        printf "%-511s\n", "DIFS seed=" seed " lba=" (mib * 2048 + s) }'
}

probe_direct() {  # O_DIRECT when busybox dd and the disk take it, else write + fsync
    dd if="$DISK" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null || DIRECT=0
}

want() {  # want SEED MIB: the pattern in /tmp/want, its md5sum in /tmp/want.sum
    pattern "$1" "$2" > /tmp/want
    md5sum < /tmp/want > /tmp/want.sum
    [ "$MIB" -le 64 ] && cp /tmp/want.sum "/tmp/sum.$1.$2"  # checked later this boot
}

write_mib() {  # write_mib SEED MIB
    want "$1" "$2"
    if [ "$DIRECT" = 1 ]; then
        dd if=/tmp/want of="$DISK" bs=$MB seek="$2" count=1 oflag=direct conv=notrunc 2>/dev/null
    else
        dd if=/tmp/want of="$DISK" bs=$MB seek="$2" count=1 conv=notrunc,fsync 2>/dev/null
    fi && WRITTEN=$((WRITTEN + MB)) && return 0
    ERRORS=$((ERRORS + 1)); return 1
}

check_mib() {  # check_mib SEED MIB: read it back and compare with the pattern (md5sum)
    if [ -f "/tmp/sum.$1.$2" ]; then mv "/tmp/sum.$1.$2" /tmp/want.sum; else want "$1" "$2"; fi
    rm -f /tmp/got
    if [ "$DIRECT" = 1 ]; then
        dd if="$DISK" of=/tmp/got bs=$MB skip="$2" count=1 iflag=direct 2>/dev/null
    else
        echo 3 > /proc/sys/vm/drop_caches
        dd if="$DISK" of=/tmp/got bs=$MB skip="$2" count=1 2>/dev/null
    fi
    READ=$((READ + $(wc -c < /tmp/got)))
    [ "$(md5sum < /tmp/got)" = "$(cat /tmp/want.sum)" ] && VERIFIED=$((VERIFIED + MB)) && return 0
    ERRORS=$((ERRORS + 1)); return 1
}

write_all() { i=0; while [ $i -lt "$MIB" ]; do write_mib "$1" $i; i=$((i + 1)); done; }
check_all() { i=0; while [ $i -lt "$MIB" ]; do check_mib "$1" $i; i=$((i + 1)); done; }

steady() {  # write one MiB and check it, read another, until SECONDS_ have passed
    end=$(($(date +%s) + SECONDS_)) round=0
    while [ "$(date +%s)" -lt $end ]; do
        m=$((round % MIB))
        write_mib "$SEED.$round" $m && check_mib "$SEED.$round" $m
        other=$(((m + MIB / 2) % MIB))
        dd if="$DISK" of=/dev/null bs=$MB skip=$other count=1 2>/dev/null && READ=$((READ + MB))
        round=$((round + 1))
    done
    echo "DIFS-STEADY rounds=$round seconds=$SECONDS_"
}

run_workload() {
    probe_direct
    echo "DIFS-IO direct=$DIRECT"
    case "$1" in
        verify|persist-write) write_all "$SEED"
            echo "DIFS-PHASE name=written uptime=$(cut -d' ' -f1 /proc/uptime)"
            check_all "$SEED" ;;
        persist-check) check_all "$SEED" ;;
        steady) steady ;;
        *) echo "DIFS-ERROR reason=unknown-workload"; return 2 ;;
    esac
    echo "DIFS-VERIFY bytes_written=$WRITTEN bytes_read=$READ verified=$VERIFIED errors=$ERRORS"
    [ "$ERRORS" = 0 ]
}
