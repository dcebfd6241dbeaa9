"""VAAL, variational adversarial active learning (Sinha, Ebrahimi & Darrell 2019): a β-VAE on
the inputs and a discriminator on its latent means; acquire what the discriminator is surest is
unlabeled. The VAE and discriminator are the acquisition's state."""

from dal_jax import acquisition as acq_lib
from dal_jax.acquisition import _learned
from dal_jax.methods._base import register_learned

register_learned("vaal", _learned.VAALConfig, _learned.vaal_init, _learned.vaal,
                 acq_lib.Needs(inputs=True), batch=False,
                 doc="β-VAE + adversarial discriminator on the inputs (Sinha et al. 2019)")
