"""The papers' CIFAR-10 test errors (%), keyed by our model names: the one home of every number
that a figure or table puts beside ours.

FAIL marks a network He et al. 2016 report as "fail": test error above 20% (Table 1's caption).
"""

import math

FAIL = math.inf

# He et al. 2015 Table 6. ResNet-110's 6.43 is the best of 5 runs (6.61 +- 0.16 over the 5).
# The plain networks have no number there (Fig. 6 only).
HE2015_TABLE6 = {
    'resnet20': 8.75, 'resnet32': 7.51, 'resnet44': 7.17, 'resnet56': 6.97, 'resnet110': 6.43,
    'resnet1202': 7.93,
}

# He et al. 2016 Table 1: shortcut variants of ResNet-110, all on the original unit.
HE2016_TABLE1 = {
    'resnet110_v1': 6.61,
    'resnet110_scale_shortcut': FAIL,      # 0.5 on the shortcut, 1 on F
    'resnet110_scale_both': 12.35,         # 0.5 on both ("frozen gating")
    'resnet110_exclusive_gate_b0': FAIL,   # b_g from 0 to -5 all fail
    'resnet110_exclusive_gate_b6': 8.70,
    'resnet110_exclusive_gate_b7': 9.81,
    'resnet110_shortcut_gate_b0': 12.86,
    'resnet110_shortcut_gate_b6': 6.91,
    'resnet110_conv_shortcut': 12.22,
    'resnet110_dropout_shortcut': FAIL,    # dropout 0.5 on the shortcut
}

# He et al. 2016 Table 2 (activation variants, Fig. 4 (a)-(e)) for ResNet-110 and ResNet-164,
# and Table 3's ResNet-1001 (original 7.61; pre-activation 4.92, the median of 5 runs).
HE2016_TABLE2 = {
    'resnet110_v1': 6.61, 'resnet110_bn_after_add': 8.17, 'resnet110_relu_before_add': 7.84,
    'resnet110_relu_preact': 6.71, 'resnet110_v2': 6.37,
    'resnet164_v1': 5.93, 'resnet164_bn_after_add': 6.50, 'resnet164_relu_before_add': 6.14,
    'resnet164_relu_preact': 5.91, 'resnet164_v2': 5.46,
    'resnet1001_v1': 7.61, 'resnet1001_v2': 4.92,
}
HE2016 = {**HE2016_TABLE1, **HE2016_TABLE2}
