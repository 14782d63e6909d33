"""The machine record: CPU model and instruction set, and the results folder name made from them."""
from __future__ import annotations

import pytest

from fna_zoo.runtime.machine import cpu_isa, cpu_label, machine_fields, machine_info, machine_slug, package_version


@pytest.mark.parametrize('flags, want', [
    ('fpu sse2 avx avx2 fma', 'avx2'),
    ('avx2 avx512f avx512bw', 'avx512'),
    ('avx2 avx512f avx512_vnni avx512_bf16', 'avx512-vnni'),
    ('avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8', 'amx'),
    ('avx2 avx_vnni', 'avx-vnni'),
    ('fp asimd asimddp', 'dotprod'),
    ('fp asimd asimddp i8mm', 'i8mm'),
    ('fp asimd asimddp sve i8mm', 'i8mm'),
    ('fp asimd asimddp sve', 'sve'),
    ('fp asimd', 'neon'),
    ('fpu sse2', None),
    ('', None),
])
def test_the_widest_instruction_set_is_named_from_the_flags(flags, want):
    assert cpu_isa(flags) == want


def test_machines_with_one_model_name_and_two_instruction_sets_get_two_folders():
    zen3 = {'cpu_model': 'AMD EPYC', 'cpu_isa': 'avx2', 'cores': 2}
    zen4 = dict(zen3, cpu_isa='avx512-vnni')
    assert machine_slug(zen3) == 'amd-epyc-2c-avx2' and machine_slug(zen4) == 'amd-epyc-2c-avx512-vnni'
    # a record written before the instruction set was recorded keeps its folder name
    assert machine_slug({'cpu_model': 'AMD EPYC', 'cores': 2}) == 'amd-epyc-2c'
    assert machine_slug(dict(zen3, gpu='NVIDIA H100 80GB HBM3')) == 'nvidia-h100-80gb-hbm3'
    assert cpu_label(zen3) == 'AMD EPYC [avx2]' and cpu_label({'cpu_model': 'AMD EPYC'}) == 'AMD EPYC'


def test_this_machine_records_its_instruction_set_in_every_row():
    import torch

    info = machine_info(1)
    assert list(info)[:len(machine_fields()) - 1] == machine_fields()[:-1]  # loadavg last, where the OS has one
    # what /proc/cpuinfo's flags give agrees with the kernels torch picked for this CPU (torch may pick fewer
    # than the CPU has, never more)
    avx512 = ('avx512', 'avx512-vnni', 'amx')
    agrees = {'AVX2': ('avx2', 'avx-vnni', *avx512), 'AVX512': avx512}
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in agrees:
        assert info['cpu_isa'] in agrees[capability]
    if info['cpu_isa'] and not info['gpu']:
        assert machine_slug(info).endswith(f"-{info['cpu_isa']}")


def test_package_version_falls_back_to_the_distribution():
    import importlib.metadata

    import numpy
    import pycocotools

    assert package_version('numpy') == numpy.__version__
    assert not hasattr(pycocotools, '__version__')  # a module without one: its distribution's version
    assert package_version('pycocotools') == importlib.metadata.version('pycocotools')
    assert package_version('no_such_module_here') is None
