"""Memoized UID checks (dimse/uidcache.py): the same answers as pynetdicom's and pydicom's
own checks, errors every time, configuration switches honoured."""

from __future__ import annotations

import pytest
from pydicom.uid import UID
from pynetdicom import _config, pdu_items, presentation, utils

from dimse import uidcache


@pytest.fixture(autouse=True)
def installed() -> None:
    uidcache.install()


def test_valid_and_invalid_uids_judged_as_before() -> None:
    assert UID("1.2.840.10008.1.2.1").is_valid  # in the registry: remembered
    assert UID("1.2.840.10008.1.2.1").is_valid
    assert UID("1.2.826.0.1.3680043.10.1234.5").is_valid  # an instance UID
    assert not UID("1.2.840.10008.01").is_valid  # leading zero
    assert not UID("1.2." + "3" * 70).is_valid  # too long
    assert not UID("1.2.840.10008.1.2.1.").is_valid


def test_conversion_is_shared_by_pynetdicoms_modules() -> None:
    for module in (utils, pdu_items, presentation):
        converted = module.set_uid(b"1.2.840.10008.1.2.4.50", "transfer_syntax")
        assert converted == "1.2.840.10008.1.2.4.50"
        assert isinstance(converted, UID)


def test_invalid_uid_raises_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="must not exceed 64"):
            utils.set_uid("1.2." + "3" * 70, "abstract_syntax")


def test_conformance_switch_is_honoured_after_caching(monkeypatch: pytest.MonkeyPatch) -> None:
    non_conformant = "1.2.840.10008.05"  # leading zero: non-conformant, not too long
    monkeypatch.setattr(_config, "ENFORCE_UID_CONFORMANCE", False)
    assert utils.set_uid(non_conformant, "abstract_syntax") == non_conformant
    monkeypatch.setattr(_config, "ENFORCE_UID_CONFORMANCE", True)
    with pytest.raises(ValueError, match="non-conformant"):
        utils.set_uid(non_conformant, "abstract_syntax")


def test_private_transfer_syntax_keeps_its_encoding() -> None:
    text = "1.2.826.0.1.3680043.10.1234.99"
    assert not hasattr(utils.set_uid(text, "transfer_syntax"), "_PRIVATE_TS_ENCODING")
    private = UID(text)
    private.set_private_encoding(False, True)
    converted = utils.set_uid(private, "transfer_syntax")
    assert converted == private
    assert converted.is_little_endian and not converted.is_implicit_VR


def test_transfer_syntaxes_added_as_before(caplog: pytest.LogCaptureFixture) -> None:
    from pynetdicom.presentation import PresentationContext

    cx = PresentationContext()
    cx.add_transfer_syntax("1.2.840.10008.1.2.1")
    cx.add_transfer_syntax(UID("1.2.840.10008.1.2.1"))  # already there: not added twice
    cx.add_transfer_syntax(b"1.2.840.10008.1.2.4.50")
    assert cx.transfer_syntax == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"]
    assert all(type(ts) is UID for ts in cx.transfer_syntax)
    # anything but a registry transfer syntax still gets pynetdicom's own checks
    with caplog.at_level("WARNING", logger="pynetdicom"):
        cx.add_transfer_syntax("1.2.840.10008.5.1.4.1.1.2")  # a SOP class
    assert "not a transfer syntax" in caplog.text
    with pytest.raises(ValueError, match="invalid UID"):
        cx.add_transfer_syntax("1.2." + "3" * 70)
