"""`models show NAME`: the stage list a method can tap, as built for a given input."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import HELP_SETTINGS, app
from .common import out

models_app = typer.Typer(help="Inspect timm models as this toolkit builds them.", no_args_is_help=True,
                         **HELP_SETTINGS)
app.add_typer(models_app, name="models")


@models_app.command()
def show(name: str, img_size: int = typer.Option(32, "--img-size", min=8),
         channels: int = typer.Option(3, "--channels", min=1, max=3),
         num_classes: int = typer.Option(10, "--num-classes", min=2),
         kwarg: Optional[list[str]] = typer.Option(None, "--kwarg", metavar="KEY=VALUE",
                                                   help="timm model argument, value as a TOML literal")) -> None:
    """Index, timm module, channels and map size of each stage."""
    from ..models import ModelSpec, build_net, check_model_name, param_count, resolve_kwargs
    from ..recipe import parse_override
    check_model_name(name, key="NAME")
    user = dict((parse_override(k)[0][-1], parse_override(k)[1]) for k in kwarg or [])
    kwargs = resolve_kwargs(name, img_size, user, pretrained=False)
    spec = ModelSpec(name=name, num_classes=num_classes, in_chans=channels, img_size=img_size,
                     mean=[0.5] * channels, std=[0.5] * channels, kwargs=kwargs)
    net = build_net(spec)
    table = Table(title=f"{name} at {img_size} px, {channels} ch — {param_count(net) / 1e6:.2f} M params; "
                        f"kwargs {kwargs}")
    for col in ("stage", "timm module", "channels", "map"):
        table.add_column(col)
    for s in net.describe_stages():
        table.add_row(str(s["index"]), s["module"], str(s["channels"]), f"{s['height']}×{s['width']}")
    out.print(table)
