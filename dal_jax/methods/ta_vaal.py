"""TA-VAAL, task-aware VAAL (Kim et al. 2021): VAAL whose decoder and discriminator also see the
normalised rank of LL4AL's predicted loss, so the method trains LL4AL's loss-prediction module
with the model (its loss term) and VAAL's networks as its acquisition state."""

from dal_jax import acquisition as acq_lib
from dal_jax.acquisition import _learned
from dal_jax.methods import ll4al
from dal_jax.methods._base import Method
from dal_jax.methods._base import register_method
from dal_jax.methods._base import split_options

NEEDS = acq_lib.Needs(outputs=("predicted_loss",), inputs=True)
OWN = {f"loss_{k}": v for k, v in ll4al.OWN.items()}


def make(**options) -> Method:
  own, rest = split_options(options, OWN)
  acquisition = _learned.learned_acquisition(
      "ta_vaal", _learned.VAALConfig, _learned.ta_vaal_init,
      lambda key, predicted, x, **kw: _learned.ta_vaal(key, x, predicted, **kw), NEEDS,
      batch=False, **rest)
  term = ll4al.loss_prediction_term(**{k[len("loss_"):]: v for k, v in {**OWN, **own}.items()})
  return Method(name="ta_vaal", acquisition=acquisition, loss_terms=(term,))


register_method("ta_vaal", make, options={**acq_lib.SELECTION_OPTIONS,
                                          **_learned.VAALConfig._field_defaults, **OWN},
                doc="VAAL conditioned on LL4AL's predicted-loss rank (Kim et al. 2021)")
