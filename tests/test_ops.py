"""Candidate ops computed as the DARTS code computes them."""
import subprocess
import sys

import torch
import torch.nn.functional as F

from gradnas.spaces.ops import FactorizedReduce


def test_factorized_reduce_is_two_offset_stride_2_convs():
    torch.manual_seed(0)
    op = FactorizedReduce(6, 8, affine=True).double().train()
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    a = F.conv2d(F.relu(x), op.conv_1.weight, stride=2)
    b = F.conv2d(F.relu(x)[:, :, 1:, 1:], op.conv_2.weight, stride=2)
    expected = F.batch_norm(torch.cat([a, b], 1), None, None, op.bn.weight, op.bn.bias, training=True)
    torch.testing.assert_close(op(x), expected, rtol=0, atol=1e-12)


def test_factorized_reduce_backward_survives_one_thread_channels_last():
    """oneDNN's channels-last stride-2 1×1 conv backward corrupted the heap at 4 channels on one thread."""
    code = ("import torch; torch.set_num_threads(1)\n"
            "from gradnas.spaces.ops import FactorizedReduce\n"
            "op = FactorizedReduce(4, 4).to(memory_format=torch.channels_last)\n"
            "for _ in range(100):\n"
            "    x = torch.randn(16, 4, 8, 8).to(memory_format=torch.channels_last).requires_grad_()\n"
            "    op(x).sum().backward()\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
