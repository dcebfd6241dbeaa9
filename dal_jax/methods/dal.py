"""DAL, discriminative active learning (Gissin & Shalev-Shwartz 2019): a labeled-vs-unlabeled
classifier on the task model's pre-logits chooses the batch in sub-batches of the points it is
surest are unlabeled, retraining in between. The classifier is the acquisition's state."""

from dal_jax import acquisition as acq_lib
from dal_jax.acquisition import _learned
from dal_jax.methods._base import register_learned

register_learned("dal", _learned.DALConfig, _learned.dal_init, _learned.dal,
                 acq_lib.Needs(pre_logits=True), batch=True,
                 doc="labeled-vs-unlabeled classifier on pre-logits (Gissin & Shalev-Shwartz 2019)")
