"""The machine description that runs and benchmarks record beside their numbers."""

from diy_lstm.training import machine

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
"""


def test_cpu_model_reads_the_model_name_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert machine.cpu_model(str(cpuinfo)) == "Intel(R) Xeon(R) CPU @ 2.20GHz"


def test_cpu_model_without_cpuinfo_still_names_something(tmp_path):
    name = machine.cpu_model(str(tmp_path / "missing"))
    assert isinstance(name, str) and name and name != "Intel(R) Xeon(R) CPU @ 2.20GHz"
