"""Citations for the published figures in the registry (`ModelSpec.top1_source` /
`ModelSpec.params_source`)."""

SLIM_README = (
    "TF-slim README, pre-trained models table "
    "(github.com/tensorflow/models/tree/master/research/slim)"
)
SLIM_PROFILE = (
    "TF-slim nets profiled with a 1000-way head (github.com/visipedia/tf_classification, "
    "nets/README.md, 'Num Params')"
)
SLIM_MOBILENET_V2 = (
    "TF-slim MobileNet v2 README (research/slim/nets/mobilenet/README.md), 'Parameters (M)'"
)
SLIM_NASNET = "TF-slim NASNet README (research/slim/nets/nasnet/README.md), 'Million Parameters'"
KERAS_DOCS = "Keras Applications table (keras.io/api/applications), 'Size/Parameters'"
MOBILENET_V1_PAPER = "Howard et al. 2017, MobileNets, Table 8 (1.0 MobileNet-224: 4.2M)"
DENSENET_KERAS = "Keras Applications table (keras.io/api/applications), 'Top-1 Accuracy'"
TIMM_INCEPTION_V4 = (
    "timm model card inception_v4.tf_in1k (slim checkpoint port), 'Params (M): 42.7'"
)
EFFICIENTNET_LITE = (
    "EfficientNet-Lite README (github.com/tensorflow/tpu/tree/master/models/official/"
    "efficientnet/lite), FP32 accuracy / params"
)
