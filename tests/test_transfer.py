"""Host → device copies (exdistill.transfer): the CPU path is a plain ``to``; on CUDA the copy
must not synchronise the host (the `gpu` tests run in benchmarks/gpu_check.sh)."""

import pytest
import torch

from exdistill.augment import Augment
from exdistill.transfer import to_device

CUDA = torch.cuda.is_available()


def test_a_copy_to_the_cpu_is_the_tensor_itself():
    t = torch.arange(5)
    assert to_device(t, "cpu") is t
    assert to_device(t, torch.device("cpu")) is t


def test_augment_parameters_moved_to_the_cpu_are_the_same_tensors():
    params = Augment("color_crop_cutout_flip_scale_rotate").sample(
        4, (8, 8), torch.Generator().manual_seed(0), per_sample=True
    )
    moved = params.to("cpu")
    assert moved is not params and moved.ops.keys() == params.ops.keys()
    for name, p in params.ops.items():
        for key, value in p.items():
            assert moved.ops[name][key] is value  # already there: no copy


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_copies_to_cuda_do_not_synchronise_the_host():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 8, 8, device="cuda")
    aug = Augment("color_crop_cutout_flip_scale_rotate")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        moved = to_device(torch.arange(3), "cuda")
        out = aug(images, gen)  # draws on the CPU generator, parameters copied to the device
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert moved.device.type == "cuda" and moved.tolist() == [0, 1, 2]
    assert out.shape == images.shape
