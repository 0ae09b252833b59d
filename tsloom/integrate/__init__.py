"""Integrate fragmented series: several datasets, collected at different periods, aligned
on one regular grid at a reference frequency, under a hash-based integration id.

    spec = IntegrationSpec.from_tables(["airq.gwangju", "airq.seoul"], "10min")
    result = integrate(spec)
    result.id          # SHA-1 of "airq.gwangju,airq.seoul" (sorted unique names, "," joined)
    result.frame       # ts + airq.gwangju.co2[sensor_id=1] ... (see features.py for names)
    result.to_dict()   # id, spec (canonical), shape, range, features, per-source report

See :mod:`tsloom.integrate.spec` for the spec, :mod:`tsloom.integrate.align` for how each
series reaches the grid, :mod:`tsloom.integrate.features` for the naming rule.
"""

from tsloom.integrate.align import (
    ALIGN_TOLERANCE,
    Integrated,
    IntegrationError,
    IntegrationReport,
    SeriesReport,
    SourceReport,
    integrate,
)
from tsloom.integrate.features import FeatureError, feature_name, resolve_feature, split_feature
from tsloom.integrate.spec import (
    ID_SEPARATOR,
    IntegrationSpec,
    IntegrationSpecError,
    SourceSpec,
    format_duration,
    integration_id,
)

__all__ = [
    "ALIGN_TOLERANCE",
    "ID_SEPARATOR",
    "FeatureError",
    "Integrated",
    "IntegrationError",
    "IntegrationReport",
    "IntegrationSpec",
    "IntegrationSpecError",
    "SeriesReport",
    "SourceReport",
    "SourceSpec",
    "feature_name",
    "format_duration",
    "integrate",
    "integration_id",
    "resolve_feature",
    "split_feature",
]
