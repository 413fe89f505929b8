"""Data scripts: download_cifar.py against a local HTTP server, images_to_cifar.py on
files the test writes, make_sample_data.py, and the bundled data/digits-bin sample.

The scripts run as real subprocesses; the server is Python's http.server on
127.0.0.1 (ephemeral port) in a thread, serving a tar.gz in the CIFAR-10 layout.
"""
import hashlib
import http.server
import importlib.util
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf

import cifar_input
import processes
from synthetic import encode_records, random_images

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO_ROOT, 'scripts')
OFFICIAL_CIFAR10_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530'
CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer',
                 'dog', 'frog', 'horse', 'ship', 'truck']
RECORDS_PER_TRAIN_FILE = 3
TEST_RECORDS = 4


# ---------------------------------------------------------------- helpers

def run_script(name, *args, timeout=120, python_flags=()):
    """Runs scripts/<name> with sys.executable; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable] + list(python_flags) + [os.path.join(SCRIPTS, name)] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """Exit 1, no traceback, exactly one `error:` line, last on stderr, holding every fragment."""
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip('\n').splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def cifar10_files(seed=0):
    """{relative path: bytes} of a tiny CIFAR-10 layout: 5 train batches, a test batch, names."""
    files = {}
    for i in range(1, 6):
        labels = (np.arange(RECORDS_PER_TRAIN_FILE) + i) % 10
        files['data_batch_%d.bin' % i] = encode_records(random_images(len(labels), seed + i), labels)
    files['test_batch.bin'] = encode_records(random_images(TEST_RECORDS, seed + 9),
                                             np.arange(TEST_RECORDS))
    files['batches.meta.txt'] = ('\n'.join(CIFAR10_NAMES) + '\n\n').encode()
    return files


def make_tar_gz(members):
    """Bytes of a .tar.gz holding {archive name: bytes}, plus one folder entry per top folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as archive:
        for top in sorted({name.split('/')[0] for name in members if '/' in name} - {'..'}):
            info = tarfile.TarInfo(top)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            archive.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def md5_of(data):
    return hashlib.md5(data).hexdigest()


def tree(directory):
    """Sorted relative paths of everything under `directory`."""
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def assert_cifar10_folder(data_dir, files):
    folder = os.path.join(data_dir, 'cifar-10-batches-bin')
    assert sorted(os.listdir(data_dir)) == ['cifar-10-batches-bin']
    assert sorted(os.listdir(folder)) == sorted(files)
    for name, data in files.items():
        with open(os.path.join(folder, name), 'rb') as f:
            assert f.read() == data, name


# ---------------------------------------------------------------- HTTP server

class _ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.routes[path] = (body, behaviour); behaviour is one of
    'full', 'truncate' (announce all bytes, send half, close) or 'stall'
    (send the headers, then nothing until server.release is set, at most 60 s; each such
    request adds to server.stalled and, once released, to server.released)."""

    def do_GET(self):
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, 'Not Found')
            return
        body, behaviour = route
        self.send_response(200)
        self.send_header('Content-Type', 'application/gzip')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if behaviour == 'stall':
            self.server.stalled.append(self.path)
            self.server.release.wait(60)
            self.server.released.append(self.path)
        elif behaviour == 'truncate':
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture(scope='module')
def cifar10_archive():
    """(member files {name: bytes}, archive bytes) of a tiny cifar-10-binary.tar.gz."""
    files = cifar10_files()
    return files, make_tar_gz({'cifar-10-batches-bin/' + name: data for name, data in files.items()})


@pytest.fixture(scope='module')
def server(cifar10_archive):
    """Base URL of a live server; server.routes and server.requests are set up per test."""
    _, archive = cifar10_archive
    httpd = _Server(('127.0.0.1', 0), _ArchiveHandler)
    httpd.routes = {
        '/cifar-10-binary.tar.gz': (archive, 'full'),
        '/truncated.tar.gz': (archive, 'truncate'),
        '/stalled.tar.gz': (archive, 'stall'),
    }
    httpd.requests = []
    httpd.release = threading.Event()
    httpd.stalled, httpd.released = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = 'http://127.0.0.1:%d' % httpd.server_address[1]
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / 'data'
    path.mkdir()
    return str(path)


# ---------------------------------------------------------------- download_cifar.py

@pytest.mark.timeout(90)
def test_download_extracts_checks_and_then_skips(server, cifar10_archive, data_dir):
    files, archive = cifar10_archive
    url = server.url + '/cifar-10-binary.tar.gz'
    first = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                       '--url=' + url, '--md5=' + md5_of(archive), python_flags=['-X', 'importtime'])
    assert first.returncode == 0, first.stderr
    assert not re.search(r'\| +tensorflow$', first.stderr, re.M)  # the whole download and check without it
    assert_cifar10_folder(data_dir, files)  # no temp archive or temp folder left beside it
    assert 'records: %d' % (5 * RECORDS_PER_TRAIN_FILE) in first.stdout
    assert 'records: %d' % TEST_RECORDS in first.stdout
    assert 'airplane' in first.stdout  # label names read from batches.meta.txt
    assert '100%' in first.stderr  # progress, with a percentage since Content-Length is known
    requests = len(server.requests)

    # A verified copy is there: nothing is fetched, even from a URL that would fail.
    second = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + server.url + '/missing.tar.gz')
    assert second.returncode == 0, second.stderr
    assert 'nothing to do' in second.stdout
    assert len(server.requests) == requests
    assert_cifar10_folder(data_dir, files)


@pytest.mark.timeout(90)
def test_download_replaces_a_copy_that_fails_the_check(cifar10_archive, data_dir, tmp_path):
    files, archive = cifar10_archive
    local_archive = tmp_path / 'cifar-10-binary.tar.gz'
    local_archive.write_bytes(archive)
    incomplete = os.path.join(data_dir, 'cifar-10-batches-bin')
    os.mkdir(incomplete)
    for name, data in files.items():  # a copy unpacked by hand that lacks one batch
        if name != 'data_batch_5.bin':
            with open(os.path.join(incomplete, name), 'wb') as f:
                f.write(data)
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + str(local_archive), '--md5=' + md5_of(archive))
    assert result.returncode == 0, result.stderr
    assert 'fails the record check' in result.stderr and 'data_batch_5.bin' in result.stderr
    assert_cifar10_folder(data_dir, files)


@pytest.mark.timeout(30)
def test_download_bad_checksum_leaves_nothing(server, data_dir):
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + server.url + '/cifar-10-binary.tar.gz')
    assert_one_line_error(result, 'checksum mismatch', OFFICIAL_CIFAR10_MD5)
    assert tree(data_dir) == []


@pytest.mark.timeout(30)
def test_download_dropped_connection_leaves_nothing(server, cifar10_archive, data_dir):
    _, archive = cifar10_archive
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + server.url + '/truncated.tar.gz', '--md5=' + md5_of(archive))
    assert_one_line_error(result, 'truncated download', 'of %d bytes' % len(archive))
    assert tree(data_dir) == []


@pytest.mark.timeout(30)
def test_download_stalled_server_times_out(server, data_dir):
    try:
        result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                            '--url=' + server.url + '/stalled.tar.gz', '--timeout=1', timeout=25)
        # It gave up while the server still held the request: before it sent or closed anything.
        assert server.stalled == ['/stalled.tar.gz'] and server.released == []
    finally:
        server.release.set()
    assert_one_line_error(result, '--timeout')
    assert tree(data_dir) == []


@pytest.mark.timeout(30)
def test_download_unreachable_url(data_dir):
    # A bound socket that never listens: connections to it are refused.
    with socket.socket() as closed_port:
        closed_port.bind(('127.0.0.1', 0))
        url = 'http://127.0.0.1:%d/cifar-10-binary.tar.gz' % closed_port.getsockname()[1]
        result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                            '--url=' + url)
    assert_one_line_error(result, 'cannot reach', url)
    assert tree(data_dir) == []


@pytest.mark.timeout(30)
def test_download_http_error(server, data_dir):
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + server.url + '/missing.tar.gz')
    assert_one_line_error(result, 'HTTP 404')
    assert tree(data_dir) == []


@pytest.mark.timeout(30)
def test_download_corrupt_archive(data_dir, tmp_path):
    garbage = np.random.RandomState(0).bytes(5000)
    path = tmp_path / 'cifar-10-binary.tar.gz'
    path.write_bytes(garbage)
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + path.as_uri(), '--md5=' + md5_of(garbage))
    assert_one_line_error(result, 'corrupt archive')
    assert tree(data_dir) == []


@pytest.mark.timeout(30)
def test_download_refuses_members_outside_the_folder(data_dir, tmp_path):
    archive = make_tar_gz({'cifar-10-batches-bin/test_batch.bin': b'x' * 3073,
                           '../escaped.bin': b'gotcha'})
    path = tmp_path / 'evil.tar.gz'
    path.write_bytes(archive)
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + str(path), '--md5=' + md5_of(archive))
    assert_one_line_error(result, 'outside the target folder', 'escaped.bin')
    assert tree(data_dir) == []
    assert not (tmp_path / 'escaped.bin').exists()


@pytest.mark.timeout(60)
def test_download_archive_whose_records_fail_the_check(data_dir, tmp_path):
    files = cifar10_files()
    files['test_batch.bin'] = files['test_batch.bin'][:-10]  # a truncated record file
    archive = make_tar_gz({'cifar-10-batches-bin/' + name: data for name, data in files.items()})
    path = tmp_path / 'cifar-10-binary.tar.gz'
    path.write_bytes(archive)
    result = run_script('download_cifar.py', '--dataset=cifar10', '--data_dir=' + data_dir,
                        '--url=' + str(path), '--md5=' + md5_of(archive))
    assert_one_line_error(result, 'fails the record check', 'test_batch.bin')
    assert tree(data_dir) == []


# ---------------------------------------------------------------- images_to_cifar.py

def _smooth_image(seed, height=32, width=32):
    """uint8 [h, w, 3]: a colour gradient, distinct per seed, that JPEG keeps closely."""
    rng = np.random.RandomState(seed)
    corners = rng.randint(30, 226, size=(2, 2, 3)).astype(np.float64)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    image = (corners[0, 0] * (1 - y) * (1 - x) + corners[0, 1] * (1 - y) * x
             + corners[1, 0] * y * (1 - x) + corners[1, 1] * y * x)
    return np.round(image).astype(np.uint8)


def _write_png(path, image):
    path.write_bytes(tf.io.encode_png(image).numpy())


def _write_jpeg(path, image):
    path.write_bytes(tf.io.encode_jpeg(image, quality=95).numpy())


def _image_folder(root):
    """Writes a class-per-subfolder tree; returns (exact {label: [images]}, jpeg {label: [images]},
    corrupt file path). Classes sorted: bird=0, cat=1, dog=2."""
    exact = {0: [], 1: [], 2: []}
    jpeg = {0: [], 1: [], 2: []}
    for label, name in enumerate(['bird', 'cat', 'dog']):
        folder = root / name
        (folder / 'more').mkdir(parents=True)
        for i in range(4):
            image = random_images(1, seed=10 * label + i)[0]
            _write_png(folder / ('%d.png' % i), image)
            exact[label].append(image)
        for i in range(2):
            image = _smooth_image(100 + 10 * label + i)
            _write_jpeg(folder / 'more' / ('%d.jpg' % i), image)
            jpeg[label].append(image)
    grey = random_images(1, seed=77)[0][:, :, :1]
    _write_png(root / 'cat' / 'grey.png', grey)
    exact[1].append(np.repeat(grey, 3, axis=2))
    rgba = np.concatenate([random_images(1, seed=78)[0], np.full((32, 32, 1), 9, np.uint8)], axis=2)
    _write_png(root / 'dog' / 'rgba.png', rgba)
    exact[2].append(rgba[:, :, :3])
    solid = np.empty((48, 64, 3), np.uint8)
    solid[:] = [12, 200, 77]  # resizing a solid colour keeps it exactly
    _write_png(root / 'bird' / 'large.png', solid)
    exact[0].append(np.full((32, 32, 3), [12, 200, 77], np.uint8))
    corrupt = root / 'dog' / 'broken.png'
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really a png' * 10)
    (root / 'cat' / '.hidden.png').write_bytes(b'ignored: hidden files are not images')
    return exact, jpeg, str(corrupt)


def _standardize(images):
    images = images.astype(np.float64)
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    std = images.std(axis=(1, 2, 3), keepdims=True)
    return (images - mean) / np.maximum(std, 1.0 / np.sqrt(3072))


def eval_pass(data_path, num_records):
    """One eval epoch through cifar_input.build_input: (float32 images, int labels) in file order."""
    with tf.Graph().as_default():
        images, labels = cifar_input.build_input('cifar10', data_path, num_records, 'eval', num_epochs=1)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.local_variables_initializer())
            coord = tf.compat.v1.train.Coordinator()
            threads = tf.compat.v1.train.start_queue_runners(sess, coord)
            try:
                image_batch, label_batch = sess.run([images, labels])
            finally:
                coord.request_stop()
                coord.join(threads)
    return image_batch, label_batch.argmax(axis=1)


@pytest.mark.timeout(90)
def test_images_to_cifar_folder_of_png_and_jpeg(tmp_path):
    exact, jpeg, corrupt = _image_folder(tmp_path / 'photos')
    output = tmp_path / 'out'
    result = run_script('images_to_cifar.py', '--input=%s' % (tmp_path / 'photos'),
                        '--output_dir=%s' % output, '--test_fraction=0.25', '--seed=5')
    assert result.returncode == 0, result.stderr
    assert 'skipped 1 unreadable images:' in result.stderr
    assert corrupt in result.stderr
    assert '.hidden.png' not in result.stderr
    assert 'skipped 1 unreadable' in result.stdout
    assert (output / 'batches.meta.txt').read_text() == 'bird\ncat\ndog\n'

    train_images, train_labels = cifar_input.read_records('cifar10', str(output / 'data_batch_1.bin'))
    test_images, test_labels = cifar_input.read_records('cifar10', str(output / 'test_batch.bin'))
    images = np.concatenate([train_images, test_images])
    labels = np.concatenate([train_labels, test_labels])
    num_per_class = {label: len(exact[label]) + len(jpeg[label]) for label in exact}
    assert len(labels) == sum(num_per_class.values())
    # Stratified: round(count * 0.25) of each class in the test file.
    expected_test_counts = [int(np.floor(n * 0.25 + 0.5)) for n in num_per_class.values()]
    assert np.bincount(test_labels).tolist() == expected_test_counts

    matched = set()
    for label, expected in exact.items():  # PNG: every pixel exact, each record used once
        for image in expected:
            hits = [i for i in range(len(images)) if np.array_equal(images[i], image)]
            assert len(hits) == 1 and labels[hits[0]] == label
            matched.add(hits[0])
    for label, expected in jpeg.items():  # JPEG: close, nearest record has the right label
        for image in expected:
            errors = np.abs(images.astype(np.float64) - image).mean(axis=(1, 2, 3))
            nearest = int(errors.argmin())
            assert errors[nearest] < 3.0 and labels[nearest] == label and nearest not in matched
            matched.add(nearest)
    assert len(matched) == len(labels)


@pytest.mark.timeout(60)
def test_images_to_cifar_npz_decodes_through_build_input(tmp_path, capsys):
    # In this process (main() with argv); the folder test above runs the script as a subprocess.
    rng = np.random.RandomState(3)
    labels = np.repeat(np.arange(4), 5)
    images = rng.randint(0, 256, size=(len(labels), 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / 'arrays.npz', images=images, labels=labels,
             label_names=np.array(['ant', 'bee', 'cow', 'doe']))
    output = tmp_path / 'out'
    converter = processes.load_script('images_to_cifar')
    assert converter.main(['--input=%s' % (tmp_path / 'arrays.npz'), '--output_dir=%s' % output]) == 0
    report = capsys.readouterr()
    assert report.err == ''
    assert 'converted 20 images of 4 classes' in report.out and 'skipped 0 unreadable' in report.out
    assert cifar_input.label_names('cifar10', str(output / 'test_batch.bin')) == ['ant', 'bee', 'cow', 'doe']

    for name in ('data_batch_1.bin', 'test_batch.bin'):
        path = str(output / name)
        records, record_labels = cifar_input.read_records('cifar10', path)
        for image, label in zip(records, record_labels):
            source = [i for i in range(len(images)) if np.array_equal(images[i], image)]
            assert len(source) == 1 and labels[source[0]] == label
        # Through the reader queues: the same pixels (standardized) and labels, in file order.
        queued_images, queued_labels = eval_pass(path, len(records))
        assert queued_labels.tolist() == record_labels.tolist()
        np.testing.assert_allclose(queued_images, _standardize(records), atol=1e-4)
    assert cifar_input.count_records('cifar10', str(output / 'test_batch.bin')) == 4  # 20% of 5 per class


@pytest.mark.timeout(30)
def test_images_to_cifar_too_many_classes(tmp_path, capsys):
    # In this process (main() with argv): a subprocess would spend seconds importing TensorFlow.
    photos = tmp_path / 'photos'
    for i in range(257):
        (photos / ('class%03d' % i)).mkdir(parents=True)
    converter = processes.load_script('images_to_cifar')
    assert converter.main(['--input=%s' % photos, '--output_dir=%s' % (tmp_path / 'out')]) == 1
    stderr = capsys.readouterr().err
    assert stderr.count('\n') == 1 and stderr.startswith('error: ')
    assert '257 class subfolders' in stderr and '256' in stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.timeout(60)
def test_images_to_cifar_bad_outputs_and_inputs_are_one_line_errors(tmp_path, capsys):
    converter = processes.load_script('images_to_cifar')
    labels = np.arange(10) % 2
    images = np.zeros((10, 32, 32, 3), np.uint8)
    np.savez(tmp_path / 'ok.npz', images=images, labels=labels,
             label_names=np.array([b'cat', b'dog']))  # byte strings, as older numpy saves them
    np.savez(tmp_path / 'empty.npz', images=images[:0], labels=labels[:0])
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    cases = [(['--input=%s' % (tmp_path / 'empty.npz'), '--output_dir=%s' % (tmp_path / 'o1')], 'no images'),
             (['--input=%s' % (tmp_path / 'ok.npz'), '--output_dir=%s' % blocker], '--output_dir=')]
    for argv, expected in cases:
        assert converter.main(argv) == 1
        stderr = capsys.readouterr().err
        assert stderr.count('\n') == 1 and stderr.startswith('error: ') and expected in stderr, stderr
    # An output folder whose name holds glob characters is a literal path, and names are text.
    output = tmp_path / 'out[1]'
    assert converter.main(['--input=%s' % (tmp_path / 'ok.npz'), '--output_dir=%s' % output]) == 0
    capsys.readouterr()
    assert cifar_input.label_names('cifar10', str(output / 'test_batch.bin')) == ['cat', 'dog']


# ---------------------------------------------------------------- the bundled sample

DIGIT_NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']


@pytest.mark.timeout(30)
def test_bundled_sample_passes_the_record_check():
    info = cifar_input.dataset_info('digits')
    train = cifar_input.check_files('digits', info.default_train_path)
    test = cifar_input.check_files('digits', info.default_eval_path)
    assert [n for _, n in train] == [1497] and [n for _, n in test] == [300]
    assert cifar_input.label_names('digits', info.default_train_path) == DIGIT_NAMES
    for path, per_class in ((info.default_train_path, None), (info.default_eval_path, 30)):
        summary = cifar_input.record_summary('digits', path)
        assert summary['label_names'] == DIGIT_NAMES
        assert min(summary['class_counts']) > 0
        if per_class:
            assert summary['class_counts'] == [per_class] * 10
    train_images, train_labels = cifar_input.read_records('digits', info.default_train_path)
    test_images, test_labels = cifar_input.read_records('digits', info.default_eval_path)
    assert len(train_labels) + len(test_labels) == 1797
    assert set(train_labels.tolist()) == set(test_labels.tolist()) == set(range(10))
    for images in (train_images, test_images):  # grey: three identical channels, dark background
        assert (images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all()
        assert images.max() == 255 and images.mean() < 100


@pytest.mark.timeout(60)
@pytest.mark.skipif(importlib.util.find_spec('sklearn') is None, reason='scikit-learn not installed')
def test_make_sample_data_rewrites_the_bundled_files_byte_for_byte(tmp_path):
    result = run_script('make_sample_data.py', '--output_dir=%s' % tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'records: 1497' in result.stdout and 'records: 300' in result.stdout
    bundled = os.path.join(cifar_input.DATA_DIR, 'digits-bin')
    for name in ('data_batch_1.bin', 'test_batch.bin', 'batches.meta.txt'):
        with open(os.path.join(bundled, name), 'rb') as committed:
            assert (tmp_path / name).read_bytes() == committed.read(), name
