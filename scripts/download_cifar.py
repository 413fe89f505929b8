#!/usr/bin/env python3
"""Downloads, verifies and unpacks the official CIFAR binary archive into data/.

    python scripts/download_cifar.py --dataset=cifar10
    python scripts/download_cifar.py --dataset=cifar100 --data_dir=/big/disk/data
    python scripts/download_cifar.py --dataset=cifar10 --url=/path/to/cifar-10-binary.tar.gz

The archive is streamed to a temporary file inside --data_dir while its MD5 is
computed; only a complete download with the expected checksum is unpacked, into
a temporary folder inside --data_dir, and the records are checked there before
the folder is renamed into place (cifar-10-batches-bin/ or cifar-100-binary/).
Any failure (offline, HTTP error, truncated download, bad checksum, corrupt
archive) prints one `error: ...` line, exits 1 and leaves nothing behind.
When a copy that passes the record check is already there, nothing is done.

Each dataset's URL, MD5 and archive layout are its entry in the dataset registry
(resnet_cifar/datasets.py). Uses urllib only; no dependency beyond the standard library and the project.
"""
import argparse
import hashlib
import http.client
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

from resnet_cifar import datasets  # the record checks, without TensorFlow


def downloads():
    """{dataset: datasets.Download}: the registered datasets this script fetches (their official
    archive's URL and MD5, the folder it unpacks to, and the train and test record files in it)."""
    return {name: datasets.dataset_info(name).download for name in datasets.dataset_names()
            if datasets.dataset_info(name).download is not None}


CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_S = 0.5


class DownloadError(Exception):
    """A failure reported to the user as one `error: ...` line."""


def _one_line(text):
    return ' '.join(str(text).split())


class Progress:
    """Throttled progress lines on stderr: percent when the total size is known."""

    def __init__(self, name, total_bytes):
        self._name = name
        self._total = total_bytes
        self._tty = sys.stderr.isatty()
        self._last_time = 0.0
        self._last_percent = -10

    def _line(self, done_bytes):
        mb = done_bytes / 1e6
        if self._total:
            return '%s: %3d%% (%.1f of %.1f MB)' % (
                self._name, 100 * done_bytes // self._total, mb, self._total / 1e6)
        return '%s: %.1f MB' % (self._name, mb)

    def update(self, done_bytes):
        now = time.monotonic()
        if now - self._last_time < PROGRESS_INTERVAL_S or done_bytes == self._total:
            return  # the complete line is finish()'s
        self._last_time = now
        if self._tty:
            sys.stderr.write('\r' + self._line(done_bytes))
        elif self._total:
            # In a log, one line per 10% rather than a line every half second.
            percent = 100 * done_bytes // self._total
            if percent < self._last_percent + 10:
                return
            self._last_percent = percent
            sys.stderr.write(self._line(done_bytes) + '\n')
        else:
            sys.stderr.write(self._line(done_bytes) + '\n')
        sys.stderr.flush()

    def finish(self, done_bytes):
        sys.stderr.write(('\r' if self._tty else '') + self._line(done_bytes) + ', done\n')
        sys.stderr.flush()


def _is_url(source):
    return urllib.parse.urlsplit(source).scheme in ('http', 'https', 'file')


def _open_source(source, timeout_s):
    """Opens a URL or a local file for reading.

    Returns (readable file object, total size in bytes or None when unknown).
    """
    if not _is_url(source):
        if '://' in source:
            raise DownloadError('--url=%s: unsupported scheme; expected http://, https://, '
                                'file:// or a local file path' % source)
        try:
            f = open(source, 'rb')
        except OSError as e:
            raise DownloadError('cannot read %s: %s' % (source, e.strerror or e))
        return f, os.fstat(f.fileno()).st_size
    try:
        response = urllib.request.urlopen(source, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        raise DownloadError('%s: HTTP %d %s' % (source, e.code, _one_line(e.reason)))
    except urllib.error.URLError as e:
        raise DownloadError('cannot reach %s: %s (offline? --url also takes a local archive)'
                            % (source, _one_line(e.reason)))
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError('cannot reach %s: %s' % (source, _one_line(e) or type(e).__name__))
    length = response.headers.get('Content-Length')
    try:
        total = int(length) if length is not None else None
    except ValueError:
        total = None
    return response, total


def download(source, archive_path, timeout_s):
    """Streams `source` (URL or local path) into `archive_path`.

    Returns the hex MD5 of the bytes written. Raises DownloadError when the
    transfer fails or stops short of the announced Content-Length.
    """
    reader, total = _open_source(source, timeout_s)
    progress = Progress('downloading %s' % os.path.basename(urllib.parse.urlsplit(source).path
                                                            or source), total)
    md5 = hashlib.md5()
    done = 0
    try:
        with reader, open(archive_path, 'wb') as out:
            while True:
                chunk = reader.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                progress.update(done)
    except TimeoutError:
        raise DownloadError('%s: no data for %g s (--timeout); download stopped after %d bytes'
                            % (source, timeout_s, done))
    except http.client.IncompleteRead:
        raise DownloadError('%s: connection closed after %d of %s bytes (truncated download)'
                            % (source, done, total))
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError('%s: download failed after %d bytes: %s'
                            % (source, done, _one_line(e) or type(e).__name__))
    if total is not None and done < total:
        raise DownloadError('%s: connection closed after %d of %d bytes (truncated download)'
                            % (source, done, total))
    progress.finish(done)
    return md5.hexdigest()


def _check_member(member, target_dir):
    """Refuses archive members that are not plain files/folders or that escape target_dir."""
    if not (member.isfile() or member.isdir()):
        raise DownloadError('corrupt archive: member %r is not a regular file or folder' % member.name)
    destination = os.path.realpath(os.path.join(target_dir, member.name))
    root = os.path.realpath(target_dir)
    if os.path.isabs(member.name) or os.path.commonpath([root, destination]) != root:
        raise DownloadError('corrupt archive: member %r points outside the target folder'
                            % member.name)


def extract(archive_path, target_dir, source):
    """Unpacks the .tar.gz at archive_path into target_dir, refusing unsafe members."""
    try:
        with tarfile.open(archive_path, 'r:gz') as archive:
            members = archive.getmembers()
            for member in members:
                _check_member(member, target_dir)
            if hasattr(tarfile, 'data_filter'):
                archive.extractall(target_dir, members=members, filter='data')
            else:
                archive.extractall(target_dir, members=members)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DownloadError('corrupt archive from %s: %s' % (source, _one_line(e) or type(e).__name__))


def _record_paths(dataset, folder):
    """(train data_path, test data_path): comma-separated file lists, as cifar_input takes them."""
    download = datasets.dataset_info(dataset).download
    return tuple(','.join(os.path.join(folder, name) for name in names)
                 for names in (download.train_files, download.test_files))


def check_folder(dataset, folder):
    """Runs the input module's record check on an extracted folder.

    Returns (train records, test records); raises datasets.DataError.
    """
    train_path, test_path = _record_paths(dataset, folder)
    counts = []
    for path in (train_path, test_path):
        counts.append(sum(n for _, n in datasets.check_files(dataset, path)))
    return tuple(counts)


def _existing_copy_ok(dataset, folder):
    """True when `folder` holds records that pass the check; says why not otherwise."""
    if not os.path.isdir(folder):
        return False
    try:
        num_train, num_test = check_folder(dataset, folder)
    except datasets.DataError as e:
        print('%s exists but fails the record check (%s); downloading it again'
              % (folder, _one_line(e)), file=sys.stderr)
        return False
    print('%s: a verified copy is already in %s (%d train, %d test records); nothing to do'
          % (dataset, folder, num_train, num_test))
    return True


def _move_into_place(extracted, folder):
    """Renames `extracted` to `folder`, replacing an old copy that failed the check."""
    if not os.path.exists(folder):
        os.rename(extracted, folder)
        return
    old = folder + '.old-%d' % os.getpid()
    os.rename(folder, old)
    os.rename(extracted, folder)
    shutil.rmtree(old, ignore_errors=True)


def fetch(dataset, data_dir, source, expected_md5, timeout_s):
    """Downloads, verifies, unpacks and checks one dataset. Returns the final folder.

    Temporary files live in data_dir (same filesystem, so the final rename is
    atomic) and are removed whatever happens.
    """
    folder_name = datasets.dataset_info(dataset).download.folder
    folder = os.path.join(data_dir, folder_name)
    archive_fd, archive_path = tempfile.mkstemp(prefix='.%s-' % dataset, suffix='.tar.gz.part',
                                                dir=data_dir)
    os.close(archive_fd)
    extract_dir = None
    try:
        md5 = download(source, archive_path, timeout_s)
        if md5 != expected_md5.lower():
            raise DownloadError('checksum mismatch for %s: MD5 %s, expected %s'
                                % (source, md5, expected_md5.lower()))
        extract_dir = tempfile.mkdtemp(prefix='.%s-extract-' % dataset, dir=data_dir)
        extract(archive_path, extract_dir, source)
        extracted = os.path.join(extract_dir, folder_name)
        if not os.path.isdir(extracted):
            raise DownloadError('corrupt archive from %s: it has no %s/ folder' % (source, folder_name))
        try:
            check_folder(dataset, extracted)
        except datasets.DataError as e:
            raise DownloadError('archive from %s fails the record check: %s' % (source, _one_line(e)))
        _move_into_place(extracted, folder)
    finally:
        os.remove(archive_path)
        if extract_dir is not None:
            shutil.rmtree(extract_dir, ignore_errors=True)
    return folder


def print_summaries(dataset, folder):
    """Prints the input module's record summary of the train and test files."""
    for name, path in zip(('train', 'test'), _record_paths(dataset, folder)):
        print('== %s files' % name)
        print(datasets.format_summary(datasets.record_summary(dataset, path)))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dataset', required=True, choices=sorted(downloads()),
                        help='which CIFAR archive to fetch')
    parser.add_argument('--data_dir', default=None,
                        help='folder that receives the extracted folder (default: the repo\'s data/)')
    parser.add_argument('--url', default=None,
                        help='http(s):// or file:// URL, or a local file path, of the archive '
                             '(default: the official URL)')
    parser.add_argument('--md5', default=None,
                        help='expected MD5 of the archive (default: the official one); only for '
                             'mirrors that serve a modified archive')
    parser.add_argument('--timeout', type=float, default=60.0,
                        help='seconds without data before the download is abandoned (default 60)')
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error('--timeout=%g: expected a positive number of seconds' % args.timeout)
    return args


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds through fetch()'s `finally`, so a killed download leaves no temp files.
    sys.exit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    download = downloads()[args.dataset]
    source = args.url or download.url
    expected_md5 = args.md5 or download.md5
    data_dir = args.data_dir or datasets.DATA_DIR
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        print('error: --data_dir=%s: cannot create it: %s' % (data_dir, e.strerror or e),
              file=sys.stderr)
        return 1
    folder = os.path.join(data_dir, download.folder)
    try:
        if _existing_copy_ok(args.dataset, folder):
            return 0
        fetch(args.dataset, data_dir, source, expected_md5, args.timeout)
    except DownloadError as e:
        print('error: %s' % e, file=sys.stderr)
        return 1
    except OSError as e:
        print('error: --data_dir=%s: %s' % (data_dir, e.strerror or e), file=sys.stderr)
        return 1
    print('%s: extracted to %s' % (args.dataset, folder))
    print_summaries(args.dataset, folder)
    return 0


if __name__ == '__main__':
    sys.exit(main())
