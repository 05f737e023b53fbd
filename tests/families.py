"""The model families every stage is tested on (tiny widths keep the suite fast)."""

# (model, kwargs, img_size, hierarchical?) — tiny widths keep the suite fast; families as the issue lists them
FAMILIES = {
    "resnet": ("resnet18", {}, 32, True),
    "mobilenetv2": ("mobilenetv2_050", {}, 32, True),
    "mobilenetv3": ("mobilenetv3_small_050", {}, 32, True),
    "convnext": ("convnext_atto", {}, 32, True),
    "vit": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=4, num_heads=2), 32, False),
    "deit": ("deit_tiny_patch16_224", dict(embed_dim=32, depth=6, num_heads=2), 32, False),
    "swin": ("swin_tiny_patch4_window7_224", dict(embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 4]), 32, True),
    "mixer": ("mixer_s16_224", dict(embed_dim=32, num_blocks=8), 32, False),
    "resmlp": ("resmlp_12_224", dict(embed_dim=32), 32, False),
}
