"""EMA teacher: update arithmetic, scopes, pseudo labels without gradients, state round trip."""

from __future__ import annotations

import pytest
import torch

import madis_stereo as ms
from madis_stereo.training.teacher import ENCODER_PREFIXES, EMATeacher


def tiny_student(seed: int = 0) -> ms.StereoModel:
    torch.manual_seed(seed)
    return ms.StereoModel(ms.ModelConfig.preset("tiny", dpt_hooks=(4, 5, 6, 7)))


def pair():
    g = torch.Generator().manual_seed(2)
    return torch.randn(1, 3, 32, 64, generator=g), torch.randn(1, 3, 32, 64, generator=g)


def test_teacher_starts_as_a_frozen_copy_of_the_student():
    student = tiny_student()
    teacher = EMATeacher(student, momentum=0.9, scope="full")
    for (name, s), t in zip(student.named_parameters(), teacher.model.parameters()):
        assert torch.equal(s, t), name
        assert t.data_ptr() != s.data_ptr()
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training


def test_ema_update_arithmetic():
    student = tiny_student()
    teacher = EMATeacher(student, momentum=0.9, scope="full")
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)  # t = 0.9 t0 + 0.1 (t0 + 1) = t0 + 0.1
    for name, t in teacher.model.named_parameters():
        assert torch.allclose(t, before[name] + 0.1, atol=1e-6), name
    teacher.update(student)  # t = 0.9 (t0 + 0.1) + 0.1 (t0 + 1) = t0 + 0.19
    for name, t in teacher.model.named_parameters():
        assert torch.allclose(t, before[name] + 0.19, atol=1e-6), name


def test_momentum_one_freezes_and_zero_copies():
    student = tiny_student()
    frozen, copier = EMATeacher(student, momentum=1.0, scope="full"), EMATeacher(student, momentum=0.0, scope="full")
    init = [p.detach().clone() for p in student.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(2.0).add_(0.5)
    frozen.update(student)
    copier.update(student)
    for p0, f, c, s in zip(init, frozen.model.parameters(), copier.model.parameters(), student.parameters()):
        assert torch.equal(f, p0)
        assert torch.equal(c, s)


def test_encoder_scope_averages_only_the_encoder_and_decodes_with_the_student():
    student = tiny_student()
    teacher = EMATeacher(student, momentum=0.5, scope="encoder")
    assert teacher.names and all(n.startswith(ENCODER_PREFIXES) for n in teacher.names)
    init = {n: p.detach().clone() for n, p in student.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01)
    teacher.update(student)
    for name, t in teacher.model.named_parameters():
        moved = 0.005 if name.startswith(ENCODER_PREFIXES) else 0.0  # halfway, or untouched outside the encoder
        assert torch.allclose(t, init[name] + moved, atol=1e-6), name
    left, right = pair()
    pseudo = teacher.pseudo_labels(left, right, student)
    with torch.no_grad():
        expected = student.decode(teacher.model.encode(left, right)).disparity
    assert torch.allclose(pseudo, expected)
    assert sorted(teacher.state_dict()) == sorted(teacher.names)


def test_full_scope_pseudo_labels_are_the_teacher_network_output_without_gradient():
    student = tiny_student()
    teacher = EMATeacher(student, momentum=0.9, scope="full")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01)
    left, right = pair()
    left.requires_grad_()
    pseudo = teacher.pseudo_labels(left, right, student)
    assert not pseudo.requires_grad
    with torch.no_grad():
        assert torch.allclose(pseudo, teacher.model(left, right).disparity)
        assert not torch.allclose(pseudo, student(left, right).disparity)


def test_state_round_trip_and_mismatch():
    student = tiny_student()
    a = EMATeacher(student, momentum=0.9, scope="full")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    a.update(student)
    b = EMATeacher(tiny_student(seed=1), momentum=0.9, scope="full")
    b.load_state_dict(a.state_dict())
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="does not match"):
        EMATeacher(student, scope="encoder").load_state_dict(a.state_dict())
