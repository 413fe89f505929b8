"""The same pre-activation ResNet in PyTorch, for scripts/benchmark.py's optional peer figure.

PyTorch is never a dependency of this project: benchmark.py imports this module only
when `import torch` works, and reports the peer as skipped otherwise. The network and
the step mirror resnet_model.py: a 3x3 stem of 16 filters; three stages of n plain
units (bn-leaky ReLU-conv 3x3, twice; 16k, 32k, 64k filters; stride 2 at the start
of stages 2 and 3) whose shortcut, where the shape changes, is an average pool and
zero-padded channels; the first unit's shortcut shares its activation; then bn-ReLU,
global average pooling and a dense layer. One step: cross-entropy, weight decay on
the convolution and dense weights, momentum 0.9, and a 0.999 moving average of every
weight, as the suite's train op does. Memory layout channels_last; bfloat16 through
autocast.
"""
import torch
from torch import nn
import torch.nn.functional as F


class PlainUnit(nn.Module):
    def __init__(self, in_filters, out_filters, stride, shared_activation, leakiness):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(in_filters, momentum=0.1), nn.BatchNorm2d(out_filters, momentum=0.1)
        self.conv1 = nn.Conv2d(in_filters, out_filters, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(out_filters, out_filters, 3, 1, 1, bias=False)
        self.stride, self.extra = stride, out_filters - in_filters
        self.shared_activation, self.leakiness = shared_activation, leakiness

    def forward(self, x):
        activated = F.leaky_relu(self.bn1(x), self.leakiness)
        shortcut = activated if self.shared_activation else x
        y = self.conv1(activated)
        y = self.conv2(F.leaky_relu(self.bn2(y), self.leakiness))
        if self.stride != 1:
            shortcut = F.avg_pool2d(shortcut, self.stride, self.stride)
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return y + shortcut


class ResNet(nn.Module):
    def __init__(self, num_residual_units, width=1, num_classes=10, leakiness=0.1):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        units, in_filters = [], 16
        for stage, (filters, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
            for i in range(num_residual_units):
                units.append(PlainUnit(in_filters, filters * width, stride if i == 0 else 1,
                                       stage == 0 and i == 0, leakiness))
                in_filters = filters * width
        self.units = nn.Sequential(*units)
        self.bn = nn.BatchNorm2d(in_filters)
        self.fc = nn.Linear(in_filters, num_classes)

    def forward(self, images):
        x = self.units(self.stem(images))
        return self.fc(F.relu(self.bn(x)).mean(dim=(2, 3)))


def train_step(num_residual_units, width, batch_size, compute_dtype, threads, leakiness=0.1):
    """A function that runs one training step on random in-memory images (NHWC in memory)."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = ResNet(num_residual_units, width, leakiness=leakiness).to(memory_format=torch.channels_last)
    decayed = [p for name, p in model.named_parameters() if name.endswith('weight') and p.dim() > 1]
    others = [p for name, p in model.named_parameters() if not (name.endswith('weight') and p.dim() > 1)]
    optimizer = torch.optim.SGD([{'params': decayed, 'weight_decay': 2e-4}, {'params': others}],
                                lr=0.1, momentum=0.9)
    shadows = [p.detach().clone() for p in model.parameters()]
    images = torch.randn(batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,))
    dtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16}.get(compute_dtype)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(shadows, [p.detach() for p in model.parameters()], 1 - 0.999)
    return step


def op_breakdown(step, steps=5):
    """{PyTorch op: ms per step} of `step`, each op's own CPU time (torch.profiler's self time),
    over `steps` profiled steps after one untimed warm-up step under the profiler (PyTorch 2.4 or
    later, for acc_events).

    PyTorch runs one op at a time (each on all its threads): compare these with
    benchmark.py's breakdown at --inter_threads=1.
    """
    from torch.profiler import ProfilerActivity, profile, schedule
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=0, warmup=1, active=steps, repeat=1), acc_events=True) as profiler:
        for _ in range(steps + 1):
            step()
            profiler.step()
    return {event.key: event.self_cpu_time_total / 1000.0 / steps for event in profiler.key_averages()
            if event.self_cpu_time_total > 0 and not event.key.startswith('ProfilerStep')}  # the step's own span


def version():
    return torch.__version__
