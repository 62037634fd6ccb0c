"""M independent VAEs (encoder, decoder and observation noise) as one batched module.

Shapes: data x (M, N, D); latents z (M, N, K); the encoder returns the mean and log-variance of
the mean-field Gaussian q(z|x); the decoder maps z (M, N, K) to f(z) (M, N, D); the noise
log σ² has shape (M, D), a learned parameter or a fixed buffer. Two decoders: the paper's
leaky-ReLU MLP, and the Cholesky-restricted linear decoder of eq. 6, f(z) = chol(AAᵀ + B·I) z.
"""

from __future__ import annotations

from typing import Sequence

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


class BatchedVAE(nn.Module):
    """M VAEs with shared shapes: encoder D→hidden→2K, decoder K→hidden→D, noise σ² (M, D)."""

    def __init__(self, n_models: int, data_dim: int, latent_dim: int, hidden: Sequence[int],
                 negative_slope: float, seeds: Sequence[int], sigma2_init: torch.Tensor,
                 learn_sigma2: bool, decoder: str = "mlp", decoder_options: dict | None = None):
        super().__init__()
        self.n_models, self.data_dim, self.latent_dim = n_models, data_dim, latent_dim
        encoder_seeds = [int(s) * 2 + 1 for s in seeds]
        self.encoder = BatchedMLP(n_models, [data_dim, *hidden, 2 * latent_dim], negative_slope,
                                  seeds=encoder_seeds)
        if decoder == "mlp":
            self.decoder = BatchedMLP(n_models, [latent_dim, *hidden, data_dim], negative_slope, seeds=seeds)
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

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x), each (M, N, K)."""
        out = self.encoder(x)
        return out[..., : self.latent_dim], out[..., self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """θ: the decoder and, when learned, the noise variance."""
        return list(self.decoder.parameters()) + ([self.log_sigma2] if self.learn_sigma2 else [])

    def state_arrays(self) -> dict[str, torch.Tensor]:
        out = {f"encoder/{k}": v for k, v in self.encoder.state_arrays().items()}
        out.update({f"decoder/{k}": v for k, v in self.decoder.state_arrays().items()})
        out["log_sigma2"] = self.log_sigma2.detach().cpu()
        return out

    def load_arrays(self, arrays: dict) -> None:
        self.encoder.load_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("encoder/")})
        self.decoder.load_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("decoder/")})
        with torch.no_grad():
            self.log_sigma2.copy_(torch.as_tensor(arrays["log_sigma2"]))
