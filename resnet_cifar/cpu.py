"""What the CPU can do, from its flags, and the compute dtype `--compute_dtype=auto` picks.

bfloat16 convolutions pay on CPUs with bfloat16 instructions (AVX512_BF16, or AMX's
tiles): oneDNN runs them there at about 1.5 times float32's speed (docs/performance.md).
Elsewhere it emulates them, slower than float32. float16 is never picked: on CPUs it is
far slower, and it needs loss scaling. No TensorFlow here.
"""
import os

# Linux lists the CPU's flags in this file, one 'flags : ...' line per core.
CPUINFO = '/proc/cpuinfo'
BFLOAT16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags(cpuinfo=None):
    """The CPU's flags (a set of lowercase names), or None where they cannot be read."""
    try:
        with open(cpuinfo or CPUINFO) as f:
            for line in f:
                name, _, value = line.partition(':')
                if name.strip() == 'flags':
                    return set(value.lower().split())
    except OSError:
        return None
    return None


def onednn_on():
    """False when TF_ENABLE_ONEDNN_OPTS=0 (or false) turns TensorFlow's oneDNN kernels off (resnet_main.py
    turns them on unless told otherwise)."""
    return os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').strip().lower() not in ('0', 'false')


def auto_compute_dtype(mode, gpu_training, flags, onednn=True):
    """(dtype, why) that --compute_dtype=auto stands for.

    mode: the RunConfig mode; only training picks bfloat16 (eval, extract and export
    score in float32). gpu_training: towers on GPUs (auto keeps float32 there).
    flags: cpu_flags() output. onednn: onednn_on(); without oneDNN, bfloat16 runs on
    TensorFlow's generic kernels, several times slower than float32.
    """
    if mode != 'train':
        return 'float32', 'auto: %s scores in float32' % mode
    if gpu_training:
        return 'float32', 'auto: training on GPUs; ask for --compute_dtype=float16 or bfloat16 there'
    if not onednn:
        return 'float32', ('auto: TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off, and without it '
                           'bfloat16 runs on slow generic kernels')
    if flags is None:
        return 'float32', 'auto: the CPU flags cannot be read (%s)' % CPUINFO
    found = [flag for flag in BFLOAT16_FLAGS if flag in flags]
    if found:
        return 'bfloat16', ('auto: this CPU has bfloat16 instructions, %s; --compute_dtype=float32 for float32'
                            % ', '.join(found))
    return 'float32', 'auto: this CPU has no bfloat16 instructions (%s)' % ' or '.join(BFLOAT16_FLAGS)


def describe():
    """One line about this machine's CPU for benchmark reports: its model name and core count."""
    name = None
    try:
        with open(CPUINFO) as f:
            name = next((line.partition(':')[2].strip() for line in f if line.startswith('model name')), None)
    except OSError:
        pass
    return '%s, %d cores' % (name or 'unknown CPU', os.cpu_count() or 0)
