"""TFRecord files, as tf.io.TFRecordWriter writes them (uncompressed): per
record, its length (uint64 LE), the length's masked CRC32C (uint32 LE), the
data, the data's masked CRC32C.

  TFRecordWriter, write_tfrecords  the one writer of the format (stages III-b
                                   and IV, classifier records, tests)
  read_tfrecords, count_records    reading back, checking the CRCs

Without TensorFlow when google_crc32c's C code is installed (stage III-b's
workers); otherwise TensorFlow frames and reads them.
"""

import contextlib
import itertools
import mmap
import os
import struct

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")  # length, its masked CRC


def _load_crc32c():
  """google_crc32c's C implementation, or None (then TensorFlow frames)."""
  try:
    import google_crc32c  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return google_crc32c if google_crc32c.implementation == "c" else None


def _masked_crc(crc32c, data):
  """The TFRecord checksum: crc32c rotated right by 15 plus a constant."""
  crc = crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _open(path, mode):
  """A local path through open, others (gs://...) through tf.io.gfile."""
  if "://" in path:
    import tensorflow as tf
    return tf.io.gfile.GFile(path, mode)
  return open(path, mode)


class TFRecordWriter:
  """Writes records to a TFRecord file, the bytes of tf.io.TFRecordWriter.

  Frames them itself when google_crc32c's C code is installed (no
  TensorFlow); otherwise hands them to TensorFlow's writer. A context
  manager, like TensorFlow's.
  """

  def __init__(self, path):
    crc32c = _load_crc32c()
    if crc32c is None:
      import tensorflow as tf
      self._file = tf.io.TFRecordWriter(path)
      self.write = self._file.write
    else:
      self._file = _open(path, "wb")
      self._crc = lambda data: _CRC.pack(_masked_crc(crc32c, data))

  def write(self, record):
    """Appends one record (bytes)."""
    length = _LENGTH.pack(len(record))
    crc = self._crc
    self._file.write(length + crc(length) + record + crc(record))

  def close(self):
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *unused_exception):
    self.close()


def write_tfrecords(path, serialized_records):
  """Writes the records, in order, as one TFRecord file."""
  with TFRecordWriter(path) as writer:
    write = writer.write
    for record in serialized_records:
      write(record)


def read_tfrecords(path):
  """Yields the records of a TFRecord file, checking both checksums of each.

  Without google_crc32c's C code, TensorFlow reads them.

  Raises:
    ValueError: a truncated or corrupt file, or one that is not TFRecords;
      the one-line message names the file and the record's offset.
  """
  crc32c = _load_crc32c()
  if crc32c is None:
    yield from _read_tfrecords_with_tensorflow(path)
    return
  with _open(path, "rb") as f:
    offset = 0
    while True:
      header = f.read(12)
      if not header:
        return
      problem = None
      if len(header) < 12:
        problem = "truncated record header"
      else:
        length = header[:8]
        if _CRC.unpack(header[8:])[0] != _masked_crc(crc32c, length):
          problem = "corrupt record length"
      if problem is None:
        (size,) = _LENGTH.unpack(length)
        record = f.read(size)
        footer = f.read(4)
        if len(record) < size or len(footer) < 4:
          problem = "truncated record"
        elif _CRC.unpack(footer)[0] != _masked_crc(crc32c, record):
          problem = "corrupt record data"
      if problem:
        raise ValueError(f"{path}: not a readable TFRecord file ({problem} "
                         f"at byte {offset})")
      yield record
      offset += 16 + size


def _read_tfrecords_with_tensorflow(path):
  """read_tfrecords through tf.data, with the same one-line errors."""
  import tensorflow as tf
  try:
    for record in tf.data.TFRecordDataset(path):
      yield record.numpy()
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"{path}: not a readable TFRecord file "
                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from None


def count_records(paths, limit=None, check_data=False):
  """The number of records in the TFRecord files `paths` together, counting
  no further than `limit` (None: all of them).

  Reads each record's 12-byte header, checks its length's CRC and seeks over
  the data and the data's CRC: one small read per record whatever its size
  (a record of label mode `full` is megabytes). The data's CRC is left to
  the reader that uses the records (tf.data and read_tfrecords check it),
  unless check_data: then every record is read whole and both CRCs checked
  (stage IV checks its inputs so before it opens its output). Files past
  the limit are not opened, records past it not read, as tf.data's
  take(limit) reads. Without google_crc32c's C code TensorFlow reads the
  files whole.

  Raises:
    ValueError: a truncated or corrupt file, or one that is not TFRecords;
      the one-line message starts with the file's path and names the
      record's offset.
  """
  if isinstance(paths, str):
    raise TypeError(f"count_records takes a list of paths, not {paths!r}")
  crc32c = _load_crc32c()
  count = 0
  for path in paths:
    most = None if limit is None else limit - count
    if most == 0:
      break
    if check_data or crc32c is None:
      count += sum(1 for _ in itertools.islice(read_tfrecords(path), most))
    else:
      count += _count_file_records(path, crc32c, most)
  return count


def _count_file_records(path, crc32c, most):
  """count_records of one file, its headers only, up to `most` records."""
  with _open(path, "rb") as f, contextlib.ExitStack() as stack:
    if "://" in path:
      import tensorflow as tf
      size = tf.io.gfile.stat(path).length

      def header_at(offset):
        f.seek(offset)
        return f.read(12)
    else:  # Mapped: a header is a slice, no read or seek call (2x faster).
      size = os.fstat(f.fileno()).st_size
      view = stack.enter_context(
          mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) if size else b""
      header_at = lambda offset: view[offset:offset + 12]
    offset = count = 0
    while offset < size and (most is None or count < most):
      header = header_at(offset)
      problem = None
      if len(header) < 12:
        problem = "truncated record header"
      else:
        length, length_crc = _HEADER.unpack(header)
        end = offset + 16 + length
        if length_crc != _masked_crc(crc32c, header[:8]):
          problem = "corrupt record length"
        elif end > size:
          problem = "truncated record"
      if problem:
        raise ValueError(f"{path}: not a readable TFRecord file ({problem} "
                         f"at byte {offset})")
      count += 1
      offset = end
  return count
