import importlib.util
from importlib import resources
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit


def load_wrapper() -> ModuleType:
    path = resources.files("stackube.devbox").joinpath("files/ebtables-wrapper.py")
    spec = importlib.util.spec_from_file_location("ebtables_wrapper", str(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wrapper = load_wrapper()

# As ebtables-nft 1.8.9 prints `-L <chain> --Ln` (seen on the devbox).
LISTING = """Bridge table: nat

Bridge chain: neutronMAC-tap1, entries: 4, policy: ACCEPT
1 -i tap1 --among-src fa:16:3e:a:b:c -j RETURN
2 -i tap2 --among-src fa:16:3e:a:b:c -j RETURN
3 -i tap1 --among-src fa:16:3e:1:2:3,fa:16:3e:a:b:c -j RETURN
4 -j DROP
"""


def test_mac_sets_ignore_leading_zeros_and_order() -> None:
    assert wrapper.mac_set("fa:16:3e:0a:0b:0c,fa:16:3e:01:02:03") == wrapper.mac_set(
        "fa:16:3e:1:2:3,fa:16:3e:a:b:c,"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [
                "-t",
                "nat",
                "--concurrent",
                "-D",
                "neutronMAC-tap1",
                "-i",
                "tap1",
                "--among-src",
                "fa:16:3e:0a:0b:0c",
                "-j",
                "RETURN",
            ],
            "1",
        ),
        (
            [
                "-D",
                "neutronMAC-tap1",
                "-i",
                "tap2",
                "--among-src",
                "fa:16:3e:0a:0b:0c",
                "-j",
                "RETURN",
            ],
            "2",
        ),
        (
            [
                "-D",
                "neutronMAC-tap1",
                "-i",
                "tap1",
                "--among-src",
                "fa:16:3e:0a:0b:0c,fa:16:3e:01:02:03",
                "-j",
                "RETURN",
            ],
            "3",
        ),
        (
            [
                "-D",
                "neutronMAC-tap1",
                "-i",
                "tap3",
                "--among-src",
                "fa:16:3e:0a:0b:0c",
                "-j",
                "RETURN",
            ],
            None,
        ),
        (
            [
                "-D",
                "neutronMAC-tap1",
                "-i",
                "tap1",
                "--among-src",
                "fa:16:3e:0a:0b:0d",
                "-j",
                "RETURN",
            ],
            None,
        ),
    ],
)
def test_rule_number_finds_exactly_the_rule_meant(args: list[str], expected: str | None) -> None:
    assert wrapper.rule_number(args, LISTING) == expected
