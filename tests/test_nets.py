import pytest
import torch

from hebae import nets


@pytest.mark.parametrize("heads", [1, 2])
def test_dense_mnist_shapes_and_widths(heads):
    cfg = nets.NetConfig("dense", (1, 28, 28), latent_dim=20, heads=heads)
    enc, dec = nets.build(cfg)
    x = torch.rand(5, 1, 28, 28)
    h = enc(x)
    assert h.shape == (5, 20 * heads)
    assert dec(h[:, :20]).shape == (5, 1, 28, 28)
    widths = [m.out_features for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [784, 800, 20 * heads]  # Appendix B: FC784, FC800, FC(k x p)
    widths = [m.out_features for m in dec.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [800, 800, 784]


def test_conv_celeba_paper_architecture_shapes():
    cfg = nets.for_dataset("celeba", (3, 64, 64), latent_dim=64, heads=2)
    enc, dec = nets.build(cfg)
    convs = [m.out_channels for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [128, 256, 512, 1024]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in enc.modules() if isinstance(m, torch.nn.Conv2d))
    ups = [(m.out_channels, m.stride) for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert ups == [(512, (2, 2)), (256, (2, 2)), (128, (2, 2)), (3, (1, 1))]
    assert dec.fc[0].out_features == 8 * 8 * 1024
    # As the official code: batch norm and ReLU after the decoder's FC, no biases before a batch
    # norm or at the output, N(0, 0.02²) weights.
    assert isinstance(dec.fc[1], torch.nn.BatchNorm1d) and isinstance(dec.fc[2], torch.nn.ReLU)
    convs_all = [m for m in [*enc.modules(), *dec.modules()] if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(m.bias is None for m in convs_all) and dec.fc[0].bias is None
    assert all(abs(float(m.weight.detach().std()) - 0.02) < 0.002 for m in convs_all)
    enc.eval(), dec.eval()
    with torch.no_grad():
        h = enc(torch.rand(2, 3, 64, 64))
        assert h.shape == (2, 128)
        assert dec(h[:, :64]).shape == (2, 3, 64, 64)


def test_conv_narrow_widths_train_a_step():
    cfg = nets.NetConfig("conv", (3, 32, 32), latent_dim=4, heads=1, channels=(4, 8, 8, 16))
    enc, dec = nets.build(cfg)
    x = torch.rand(3, 3, 32, 32)
    loss = dec(enc(x)).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in [*enc.parameters(), *dec.parameters()])


def test_bad_configs_name_the_parameter():
    with pytest.raises(ValueError, match="arch must be one of dense, conv"):
        nets.NetConfig("rnn", (1, 28, 28), 2)
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        nets.NetConfig("dense", (1, 28, 28), 0)
    with pytest.raises(ValueError, match="heads must be 1 or 2"):
        nets.NetConfig("dense", (1, 28, 28), 2, heads=3)
    with pytest.raises(ValueError, match="image_shape must be square"):
        nets.NetConfig("conv", (3, 28, 28), 2)
