"""Objects per second of the basic de-identification profile on CT-sized objects.

Generates CT images (512 x 512, 16 bit, a realistic header with nested sequences and private
attributes), then times the basic profile (deid parser, UID replacement with the key store,
file meta) alone, and with reading and writing Part 10 files. Run: ``python bench/deid.py [N]``.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is called deid.py: keep its folder off the path so `import deid` finds the library
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

from tests.support.factory import make_dataset, uid  # noqa: E402
from vna.config import Settings  # noqa: E402
from vna.deid import service  # noqa: E402


def ct_object(study: str, series: str, n: int) -> bytes:
    ds = make_dataset(
        study_uid=study, series_uid=series, rows=512, columns=512, instance_number=n, seed=n
    )
    ds.InstitutionName, ds.StationName, ds.OperatorsName = "General Hospital", "CT01", "Tech^A"
    ds.SeriesDescription, ds.ProtocolName = "CHEST W CONTRAST", "CHEST"
    ds.FrameOfReferenceUID = uid()
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, uid()
    ds.ReferencedImageSequence = Sequence([ref])
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x23, "DS", "55.0")
    block.add_new(0x10, "LO", "private note")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    warnings.simplefilter("ignore")
    study, series = uid(), uid()
    blobs = [ct_object(study, series, i) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), deid_key_env="")
        store = service.open_keystore(settings)
        deid = service.Deidentifier(settings, "basic", "bench", store)
        deid.apply(dcmread(io.BytesIO(blobs[0])))  # warm up (project secret, recipe)
        datasets = [dcmread(io.BytesIO(b)) for b in blobs]
        start = time.perf_counter()
        for ds in datasets:
            deid.apply(ds)
        header_only = time.perf_counter() - start
        out = Path(tmp) / "out"
        start = time.perf_counter()
        for blob in blobs:
            result, _ = deid.apply(dcmread(io.BytesIO(blob)))
            service.write(result, service.output_path(out, result))
        full = time.perf_counter() - start
        store.close()
    size = len(blobs[0]) / 1e6
    print(f"basic profile, {count} CT objects of {size:.2f} MB (512x512x16 bit)")
    print(f"  de-identify (in memory):        {count / header_only:7.1f} objects/s")
    print(f"  read + de-identify + write file: {count / full:7.1f} objects/s")


if __name__ == "__main__":
    main()
