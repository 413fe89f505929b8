"""cpu.py: the CPU's flags and what --compute_dtype=auto picks from them."""
from resnet_cifar import cpu

BF16_CPUINFO = 'processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f AVX512_BF16 fma\n\n'
PLAIN_CPUINFO = 'processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f fma\n'


def test_flags_are_read_lowercase_from_cpuinfo(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text(BF16_CPUINFO)
    assert cpu.cpu_flags(str(path)) == {'fpu', 'sse2', 'avx2', 'avx512f', 'avx512_bf16', 'fma'}
    assert cpu.cpu_flags(str(tmp_path / 'missing')) is None
    (tmp_path / 'empty').write_text('processor\t: 0\n')
    assert cpu.cpu_flags(str(tmp_path / 'empty')) is None


def test_auto_is_bfloat16_only_for_training_on_a_cpu_with_bfloat16_instructions():
    assert cpu.auto_compute_dtype('train', False, {'avx512f', 'avx512_bf16'})[0] == 'bfloat16'
    assert cpu.auto_compute_dtype('train', False, {'amx_bf16', 'amx_tile'})[0] == 'bfloat16'
    assert cpu.auto_compute_dtype('train', False, {'avx512f', 'avx512_fp16'})[0] == 'float32'
    assert cpu.auto_compute_dtype('train', False, None)[0] == 'float32'
    assert cpu.auto_compute_dtype('train', True, {'avx512_bf16'})[0] == 'float32'  # GPUs: never float16
    for mode in ('eval', 'extract', 'export'):
        assert cpu.auto_compute_dtype(mode, False, {'avx512_bf16'}) == ('float32', 'auto: %s scores in float32' % mode)
    dtype, why = cpu.auto_compute_dtype('train', False, {'avx512_bf16', 'amx_bf16'})
    assert why == ('auto: this CPU has bfloat16 instructions, avx512_bf16, amx_bf16; '
                   '--compute_dtype=float32 for float32')


def test_auto_is_float32_when_onednn_is_off_even_on_a_bfloat16_cpu(tmp_path, monkeypatch):
    """Without oneDNN, TensorFlow runs bfloat16 convolutions on its generic kernels: ResNet-32
    trained at 20 images/s in bfloat16 against 145 in float32 here (2026-12-01)."""
    import processes
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(BF16_CPUINFO)
    monkeypatch.setattr(cpu, 'CPUINFO', str(cpuinfo))
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '1')
    assert processes.resolve(['--mode=train', '--dataset=digits']).model.compute_dtype == 'bfloat16'
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    config = processes.resolve(['--mode=train', '--dataset=digits'])
    assert config.model.compute_dtype == 'float32'
    assert config.compute_dtype_choice == ('auto: TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off, and without it '
                                           'bfloat16 runs on slow generic kernels')
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', 'False')  # TensorFlow reads booleans this way too
    assert processes.resolve(['--mode=train', '--dataset=digits']).model.compute_dtype == 'float32'
    assert processes.resolve(['--mode=train', '--dataset=digits', '--compute_dtype=bfloat16']
                             ).model.compute_dtype == 'bfloat16'  # asked for: given
