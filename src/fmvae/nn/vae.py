"""M independent VAEs (encoder, decoder and observation noise) as one batched module.

Shapes: data x (M, N, D); latents z (M, N, K); the encoder returns the mean and log-variance of
the mean-field Gaussian q(z|x); the decoder maps z (M, N, K) to f(z) (M, N, D); the noise
log σ² has shape (M, D), a learned parameter or a fixed buffer. Two decoders: the paper's
leaky-ReLU MLP, and the Cholesky-restricted linear decoder of eq. 6, f(z) = chol(AAᵀ + B·I) z.

With ``labels`` the stack is Kingma et al.'s M2 (docs/methods.md §2): the decoder maps (z, y) to f(z, y)
(y one-hot, or a relaxed one-hot sample, for discrete labels; y itself for continuous ones, the
surrogates' input layout), ``encoder`` is the unlabelled q(z|x), ``encoder_zy`` the labelled
q(z|x, y) and ``classifier`` q(y|x) (C logits, or the mean and log-variance of a Gaussian).
Semi-supervised inputs are *packed*: (M, N, D + 2) = [x, y, observed], so the trainer handles
them like x; every network reads only the first D columns as x.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmvae.nn.batched import BatchedMLP


class LinearCholeskyDecoder(nn.Module):
    """Eq. 6: f(z) = L z with L = chol(A Aᵀ + B·I); θ = A, one (K×K) matrix per model."""

    def __init__(self, n_models: int, dim: int, B: float, seeds: Sequence[int]):
        super().__init__()
        draws = [torch.randn(1, dim, dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        self.A = nn.Parameter(torch.cat(draws))
        self.B = float(B)
        self.n_models = n_models

    def cholesky(self) -> torch.Tensor:
        eye = torch.eye(self.A.shape[-1], dtype=self.A.dtype, device=self.A.device)
        return torch.linalg.cholesky(self.A @ self.A.transpose(1, 2) + self.B * eye)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.cholesky().transpose(1, 2)

    def state_arrays(self) -> dict:
        return {"A": self.A.detach().cpu()}

    def set_models(self, indices, arrays: dict) -> None:
        with torch.no_grad():
            self.A[indices] = torch.as_tensor(arrays["A"], dtype=self.A.dtype).reshape(self.A.shape[1:])

    def load_arrays(self, arrays: dict) -> None:
        with torch.no_grad():
            self.A.copy_(torch.as_tensor(arrays["A"]))


class Labels:
    """The label of an M2 model: ``n_classes`` ≥ 2 (discrete y) or 0 (one continuous y).

    ``discrete_y`` (config ``training.m2.discrete_y``) says which model a discrete y defines:
    ``enumerate`` (default), the discrete model, whose bounds sum over the classes with one-hot
    decoder inputs; ``relaxed``, the Concrete-relaxed model at ``temperature``, used the same way in
    training, evaluation and generation."""

    def __init__(self, n_classes: int, discrete_y: str = "enumerate", temperature: float = 2.2):
        if n_classes == 1 or n_classes < 0:
            raise ValueError(f"n_classes must be 0 (continuous y) or at least 2, got {n_classes}")
        if discrete_y not in ("enumerate", "relaxed"):
            raise ValueError(f"discrete_y must be 'enumerate' or 'relaxed', got {discrete_y!r}")
        self.n_classes = int(n_classes)
        self.discrete_y, self.temperature = discrete_y, float(temperature)

    @property
    def relaxed(self) -> bool:
        """A discrete label modelled by its Concrete relaxation (training.m2.discrete_y: relaxed)."""
        return self.discrete and self.discrete_y == "relaxed"

    def with_settings(self, settings: dict | None) -> Labels:
        """The same label under the config's ``training.m2`` settings (discrete_y, temperature)."""
        return Labels(self.n_classes, **(settings or {}))

    @property
    def discrete(self) -> bool:
        return self.n_classes > 0

    @property
    def width(self) -> int:
        """Width of y as the decoder and q(z|x, y) see it (and of its reparameterisation noise)."""
        return self.n_classes if self.discrete else 1

    @property
    def classifier_width(self) -> int:
        return self.n_classes if self.discrete else 2

    def represent(self, y: torch.Tensor) -> torch.Tensor:
        """Observed labels (…,) as decoder input (…, width): one-hot class indices, or y itself."""
        if self.discrete:
            return torch.nn.functional.one_hot(y.long(), self.n_classes).to(torch.float32)
        return y[..., None].to(torch.float32)


class BatchedVAE(nn.Module):
    """M VAEs with shared shapes: encoder D→hidden→2K, decoder K→hidden→D, noise σ² (M, D);
    with ``labels`` (an M2 stack) also q(z|x, y) and q(y|x), and a decoder on (z, y)."""

    def __init__(self, n_models: int, data_dim: int, latent_dim: int, hidden: Sequence[int],
                 negative_slope: float, seeds: Sequence[int], sigma2_init: torch.Tensor,
                 learn_sigma2: bool, decoder: str = "mlp", decoder_options: dict | None = None,
                 labels: Labels | None = None):
        super().__init__()
        self.n_models, self.data_dim, self.latent_dim = n_models, data_dim, latent_dim
        self.labels = labels
        label_width = labels.width if labels else 0
        self.noise_dim = latent_dim + label_width  # reparameterisation noise per sample: z, then y
        encoder_seeds = [int(s) * 2 + 1 for s in seeds]
        self.encoder = BatchedMLP(n_models, [data_dim, *hidden, 2 * latent_dim], negative_slope,
                                  seeds=encoder_seeds)
        if labels:
            self.encoder_zy = BatchedMLP(n_models, [data_dim + label_width, *hidden, 2 * latent_dim],
                                         negative_slope, seeds=[int(s) * 2 + 3 for s in seeds])
            self.classifier = BatchedMLP(n_models, [data_dim, *hidden, labels.classifier_width], negative_slope,
                                         seeds=[int(s) * 2 + 5 for s in seeds])
        if decoder == "mlp":
            self.decoder = BatchedMLP(n_models, [latent_dim + label_width, *hidden, data_dim], negative_slope,
                                      seeds=seeds)
        elif labels:
            raise ValueError("an M2 model needs the MLP decoder")
        elif decoder == "linear_cholesky":
            if latent_dim != data_dim:
                raise ValueError("the eq. 6 decoder needs latent_dim == data_dim")
            self.decoder = LinearCholeskyDecoder(n_models, data_dim, seeds=seeds, **(decoder_options or {}))
        else:
            raise ValueError(f"unknown decoder {decoder!r}; allowed: 'mlp', 'linear_cholesky'")
        log_sigma2 = torch.log(torch.as_tensor(sigma2_init, dtype=torch.float32)).expand(n_models, data_dim).clone()
        if learn_sigma2:
            self.log_sigma2 = nn.Parameter(log_sigma2)
        else:
            self.register_buffer("log_sigma2", log_sigma2)
        self.learn_sigma2 = learn_sigma2

    def encoder_nets(self) -> dict[str, BatchedMLP]:
        """The inference networks φ by name: ``encoder`` and, for M2, ``encoder_zy`` and ``classifier``."""
        return {"encoder": self.encoder, **({"encoder_zy": self.encoder_zy, "classifier": self.classifier}
                                            if self.labels else {})}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x of plain or packed inputs (the first D columns)."""
        return x[..., : self.data_dim]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x), each (M, N, K)."""
        out = self.encoder(self.features(x))
        return out[..., : self.latent_dim], out[..., self.latent_dim:]

    def encode_labelled(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """M2: mean and log-variance of q(z|x, y); ``y`` as the decoder sees it (M, N, width)."""
        out = self.encoder_zy(torch.cat([self.features(x), y], -1))
        return out[..., : self.latent_dim], out[..., self.latent_dim:]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """M2: q(y|x) as C logits, or the Gaussian's mean and log-variance, (M, N, ·)."""
        return self.classifier(self.features(x))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """f(z), or for M2 f(z, y) with ``y`` as the decoder sees it (…, width)."""
        return self.decoder(z if y is None else torch.cat([z, y], -1))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for net in self.encoder_nets().values() for p in net.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """θ: the decoder and, when learned, the noise variance."""
        return list(self.decoder.parameters()) + ([self.log_sigma2] if self.learn_sigma2 else [])

    def state_arrays(self) -> dict[str, torch.Tensor]:
        out = {f"{name}/{k}": v for name, net in self.encoder_nets().items() for k, v in net.state_arrays().items()}
        out.update({f"decoder/{k}": v for k, v in self.decoder.state_arrays().items()})
        out["log_sigma2"] = self.log_sigma2.detach().cpu()
        return out

    def load_arrays(self, arrays: dict) -> None:
        for name, net in self.encoder_nets().items():
            net.load_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{name}/")})
        self.decoder.load_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("decoder/")})
        with torch.no_grad():
            self.log_sigma2.copy_(torch.as_tensor(arrays["log_sigma2"]))
