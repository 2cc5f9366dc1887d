"""TFLite Metadata: the standard TFLITE_METADATA flatbuffer (schema tflite-support metadata_schema.fbs, file
identifier "M001") that Android Studio's ML model binding, the TFLite Support library's MetadataExtractor and
Netron read, written into and read back from .tflite bytes; plus small utilities on the model flatbuffer
(signature renaming, a summary of tensors, operators and metadata entries). No interpreter is needed.

The model flatbuffer is read and written with the schema's generated Python (ai_edge_litert's copy, else
TensorFlow's); the metadata one is vendored in _metadata_schema_py_generated.py. Writing goes through the
object API and rebuilds the whole flatbuffer, as tflite-support's MetadataPopulator does: about 10 ms for a
2 MB model (weights are copied as numpy arrays). Limits: models whose buffers live outside the flatbuffer
(files over 2 GB) are refused, and bytes appended after the flatbuffer (tflite-support's zip of associated
files) are not kept.

Metadata dict (add_metadata's argument, read_metadata's result):
    {"name": str, "description": str, "version": str, "author": str, "license": str,
     "inputs":  [{"name": "z", "description": str, "range": [min, max] or None,
                  "content": "feature", "dimension_names": [str, ...] or None}, ...],
     "outputs": [{"name": "mean", "description": str, "range": [0.0, 1.0] or None,
                  "content": "image" | "feature", "color_space": "GRAYSCALE" | "RGB" (image only),
                  "dimension_names": [str, ...] or None}, ...]}
Inputs and outputs are named by the signature's names; in the flatbuffer they follow the subgraph's input and
output tensor order, as the metadata spec requires.
"""

import flatbuffers
import numpy as np

from kerasvae.export import _metadata_schema_py_generated as _meta_fb

try:  # LiteRT's copy is the newer schema (a superset): rebuilding a model with it drops no field
    from ai_edge_litert import schema_py_generated as _model_fb
except ImportError:  # pragma: no cover - the export extra is not installed
    from tensorflow.lite.python import schema_py_generated as _model_fb

METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
_COLOR_SPACES = {"RGB": _meta_fb.ColorSpaceType.RGB, "GRAYSCALE": _meta_fb.ColorSpaceType.GRAYSCALE}
_TENSOR_TYPES = {v: k.lower() for k, v in vars(_model_fb.TensorType).items() if not k.startswith("_")}
_BUILTIN_OPS = {v: k for k, v in vars(_model_fb.BuiltinOperator).items() if not k.startswith("_")}
_ROOT_KEYS = ("name", "description", "version", "author", "license")


# ----------------------------------------------------------------------------------------------- flatbuffers
def read_model(model_bytes):
    """The model as the schema's object API tree (ModelT), buffers as numpy arrays.

    Args:
        model_bytes: bytes. A .tflite flatbuffer.
    """
    root = _root(model_bytes)
    model = _model_fb.ModelT.InitFromObj(root)
    if any(buffer.offset > 1 for buffer in model.buffers or []):
        raise ValueError("Models with buffers outside the flatbuffer (files over 2 GB) are not supported.")
    return model


def write_model(model):
    """Flatbuffer bytes (identifier TFL3) of a ModelT.

    Args:
        model: ModelT. e.g. read_model's result, edited.
    """
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    return bytes(builder.Output())


def metadata_buffers(model_bytes):
    """{name: bytes} of the model's metadata entries (e.g. min_runtime_version, CONVERSION_METADATA,
    TFLITE_METADATA); the first entry wins when a name repeats.

    Args:
        model_bytes: bytes. A .tflite flatbuffer.
    """
    root = _root(model_bytes)
    found = {}
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        name = entry.Name().decode()
        if name not in found:
            buffer = root.Buffers(entry.Buffer())
            found[name] = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return found


def _root(model_bytes):
    if not _model_fb.Model.ModelBufferHasIdentifier(model_bytes, 0):
        raise ValueError("Not a TFLite model: the flatbuffer identifier is not TFL3.")
    return _model_fb.Model.GetRootAs(model_bytes, 0)


def _text(value):
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------------------------- the model
def model_info(model_bytes):
    """What an app needs to call the model, read from the flatbuffer:

        {"signatures": {key: {"inputs": {name: {"name": raw tensor name, "index": tensor index,
                                                "shape": [...], "dtype": "float32"}}, "outputs": {...}}},
         "min_runtime_version": "1.14.0" or None, "operators": [[builtin op name, version], ...] (sorted),
         "metadata_names": [metadata entry names, in file order]}

    Args:
        model_bytes: bytes. A .tflite flatbuffer.
    """
    root = _root(model_bytes)
    signatures = {}
    for s in range(root.SignatureDefsLength()):
        signature = root.SignatureDefs(s)
        subgraph = root.Subgraphs(signature.SubgraphIndex())

        def tensors(count, get):
            described = {}
            for i in range(count):
                item = get(i)
                tensor = subgraph.Tensors(item.TensorIndex())
                described[item.Name().decode()] = {
                    "name": _text(tensor.Name()),
                    "index": int(item.TensorIndex()),
                    "shape": [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
                    "dtype": _TENSOR_TYPES.get(tensor.Type(), str(tensor.Type())),
                }
            return described

        signatures[signature.SignatureKey().decode()] = {
            "inputs": tensors(signature.InputsLength(), signature.Inputs),
            "outputs": tensors(signature.OutputsLength(), signature.Outputs),
        }
    operators = set()
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        # Codes above 127 live only in builtin_code; older files only fill deprecated_builtin_code.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = _BUILTIN_OPS.get(builtin, str(builtin))
        if builtin == _model_fb.BuiltinOperator.CUSTOM:
            name = f"CUSTOM:{_text(code.CustomCode())}"
        operators.add((name, int(code.Version())))
    buffers = metadata_buffers(model_bytes)
    runtime = buffers.get("min_runtime_version")
    names = [root.Metadata(i).Name().decode() for i in range(root.MetadataLength())]
    return {
        "signatures": signatures,
        "min_runtime_version": runtime.rstrip(b"\0").decode() if runtime else None,
        "operators": [list(op) for op in sorted(operators)],
        "metadata_names": names,
    }


def rename_signature(model_bytes, new_key):
    """The model with its only signature renamed `new_key` (e.g. a file converted from the SavedModel
    signature "decode_b16" gets "decode"); tensors and their names are unchanged.

    Args:
        model_bytes: bytes. A .tflite flatbuffer with exactly one signature.
        new_key: str. The new signature key.
    """
    model = read_model(model_bytes)
    signatures = model.signatureDefs or []
    if len(signatures) != 1:
        raise ValueError(f"rename_signature needs a model with exactly one signature; it has {len(signatures)}.")
    signatures[0].signatureKey = new_key
    return write_model(model)


def drop_aliased_outputs(model_bytes, prefer=("mean",)):
    """(model, {dropped name: kept name}): where several signature outputs are one tensor (a Gaussian's
    `loc` is its `mean`), keep one name, preferring those in `prefer`, and drop the others from the
    signature and the subgraph's outputs. LiteRT's CompiledModel reports such a tensor under one name only,
    so an app asking for the other would find nothing.

    Args:
        model_bytes: bytes. A .tflite flatbuffer with exactly one signature, on subgraph 0.
        prefer: iterable of str. Names kept over the others that share their tensor.
    """
    model = read_model(model_bytes)
    (signature,) = model.signatureDefs
    by_tensor = {}
    for tensor_map in signature.outputs:
        by_tensor.setdefault(int(tensor_map.tensorIndex), []).append(tensor_map)
    aliases, kept = {}, []
    for maps in by_tensor.values():
        maps.sort(key=lambda m: (_text(m.name) not in prefer, _text(m.name)))
        kept.append(maps[0])
        aliases.update({_text(m.name): _text(maps[0].name) for m in maps[1:]})
    if not aliases:
        return model_bytes, {}
    signature.outputs = [m for m in signature.outputs if m in kept]
    subgraph = model.subgraphs[signature.subgraphIndex or 0]
    seen, outputs = set(), []
    for index in subgraph.outputs:
        if int(index) not in seen:
            seen.add(int(index))
            outputs.append(int(index))
    subgraph.outputs = outputs
    return write_model(model), aliases


# ---------------------------------------------------------------------------------------------- the metadata
def add_metadata(model_bytes, metadata):
    """The model with `metadata` stored as its TFLITE_METADATA entry (a ModelMetadata flatbuffer, identifier
    M001), replacing an earlier one; the converter's entries (min_runtime_version, CONVERSION_METADATA) stay.

    The model must have exactly one signature, on subgraph 0 (the metadata describes subgraph 0), and
    `metadata` must describe each of its inputs and outputs once, by signature name. A range [min, max] is
    written as Stats; "content" as FeatureProperties or ImageProperties (with its color space).
    min_parser_version is set as MetadataPopulator sets it: the newest schema version among the fields used,
    "1.0.0" for everything this function writes (see min_parser_version).

    Args:
        model_bytes: bytes. A .tflite flatbuffer.
        metadata: dict. See the module docstring.
    """
    model = read_model(model_bytes)
    signatures = model.signatureDefs or []
    if len(signatures) != 1 or signatures[0].subgraphIndex != 0:
        raise ValueError("add_metadata needs a model with exactly one signature, on subgraph 0.")
    signature, subgraph = signatures[0], model.subgraphs[0]
    unknown = sorted(set(metadata) - set(_ROOT_KEYS) - {"inputs", "outputs", "min_parser_version"})
    if unknown:
        raise ValueError(f"Unknown metadata keys {unknown}.")
    root = _meta_fb.ModelMetadataT()
    for key in _ROOT_KEYS:
        if metadata.get(key) is not None:
            setattr(root, key, str(metadata[key]))
    graph = _meta_fb.SubGraphMetadataT()
    graph.name = _text(signature.signatureKey)
    graph.inputTensorMetadata = _ordered(metadata.get("inputs", []), signature.inputs, subgraph.inputs, "input")
    graph.outputTensorMetadata = _ordered(metadata.get("outputs", []), signature.outputs, subgraph.outputs, "output")
    root.subgraphMetadata = [graph]
    root.minParserVersion = min_parser_version(root)
    builder = flatbuffers.Builder(1024)
    builder.Finish(root.Pack(builder), file_identifier=METADATA_IDENTIFIER)
    data = _model_fb.BufferT()
    data.data = np.frombuffer(bytes(builder.Output()), np.uint8)

    model.metadata = model.metadata or []
    entries = [m for m in model.metadata if _text(m.name) == METADATA_NAME]
    if entries:  # replace in place; drop (and empty the buffers of) any duplicates a faulty writer left
        model.buffers[entries[0].buffer] = data
        used = {t.buffer for g in model.subgraphs for t in g.tensors or []}
        for extra in entries[1:]:
            model.metadata.remove(extra)
            if extra.buffer not in used and extra.buffer != entries[0].buffer:
                model.buffers[extra.buffer] = _model_fb.BufferT()
    else:
        model.buffers.append(data)
        entry = _model_fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return write_model(model)


def _ordered(described, signature_tensors, subgraph_tensors, kind):
    """TensorMetadataT for each subgraph input (or output) tensor, in the subgraph's order."""
    by_name = {}
    for item in described:
        if item["name"] in by_name:
            raise ValueError(f"{kind} {item['name']!r} is described twice.")
        by_name[item["name"]] = item
    # Two signature names can share one tensor (a Gaussian's mean is its loc): each occurrence of the tensor
    # in the subgraph takes the next of its names, in the signature's order.
    names = {}
    for t in signature_tensors or []:
        names.setdefault(int(t.tensorIndex), []).append(_text(t.name))
    expected = [names[int(index)].pop(0) if names.get(int(index)) else None for index in subgraph_tensors]
    if None in expected or sorted(expected) != sorted(by_name):
        raise ValueError(
            f"The metadata must describe each signature {kind} once: the signature has "
            f"{sorted(n for n in expected if n)} (subgraph {kind}s {list(map(int, subgraph_tensors))}), "
            f"the metadata {sorted(by_name)}."
        )
    return [_tensor_metadata(by_name[name], kind) for name in expected]


def _tensor_metadata(item, kind):
    unknown = sorted(set(item) - {"name", "description", "range", "content", "color_space", "dimension_names"})
    if unknown:
        raise ValueError(f"Unknown keys {unknown} in the metadata of {kind} {item['name']!r}.")
    tensor = _meta_fb.TensorMetadataT()
    tensor.name = item["name"]
    if item.get("description") is not None:
        tensor.description = str(item["description"])
    if item.get("dimension_names") is not None:
        tensor.dimensionNames = [str(d) for d in item["dimension_names"]]
    content = _meta_fb.ContentT()
    kind_of_content = item.get("content", "feature")
    if kind_of_content == "image":
        space = item.get("color_space")
        if space not in _COLOR_SPACES:
            raise ValueError(
                f"Image {kind} {item['name']!r} needs color_space in {sorted(_COLOR_SPACES)}, got {space!r}."
            )
        content.contentPropertiesType = _meta_fb.ContentProperties.ImageProperties
        content.contentProperties = _meta_fb.ImagePropertiesT()
        content.contentProperties.colorSpace = _COLOR_SPACES[space]
    elif kind_of_content == "feature":
        if item.get("color_space") is not None:
            raise ValueError(f"color_space is for image content; {kind} {item['name']!r} is a feature.")
        content.contentPropertiesType = _meta_fb.ContentProperties.FeatureProperties
        content.contentProperties = _meta_fb.FeaturePropertiesT()
    else:
        raise ValueError(f"content must be 'image' or 'feature', got {kind_of_content!r}.")
    tensor.content = content
    if item.get("range") is not None:
        low, high = (float(v) for v in item["range"])
        tensor.stats = _meta_fb.StatsT()
        tensor.stats.min, tensor.stats.max = [low], [high]
    return tensor


def min_parser_version(metadata):
    """The minimum metadata parser version that understands every field of `metadata`: a port of
    tflite-support's GetMinimumMetadataParserVersion (metadata/cc/metadata_version.cc, schema 1.5.0), which
    MetadataPopulator writes into min_parser_version. Names, descriptions, stats, dimension names and
    Feature/ImageProperties are all 1.0.0 fields.

    Args:
        metadata: ModelMetadataT.
    """
    found = [(1, 0, 0)]
    types = _meta_fb.AssociatedFileType
    options = _meta_fb.ProcessUnitOptions

    def files(items):
        for f in items or []:
            found.append((1, 0, 1) if f.type == types.VOCABULARY else (1, 0, 0))
            found.append((1, 4, 0) if f.type == types.SCANN_INDEX_FILE else (1, 0, 0))
            found.append((1, 4, 1) if f.version is not None else (1, 0, 0))

    def units(items):
        version = {
            options.BertTokenizerOptions: (1, 1, 0),
            options.SentencePieceTokenizerOptions: (1, 1, 0),
            options.RegexTokenizerOptions: (1, 2, 1),
        }
        found.extend(version.get(u.optionsType, (1, 0, 0)) for u in items or [])

    for graph in metadata.subgraphMetadata or []:
        for tensor in (graph.inputTensorMetadata or []) + (graph.outputTensorMetadata or []):
            files(tensor.associatedFiles)
            units(tensor.processUnits)
            audio = _meta_fb.ContentProperties.AudioProperties
            if tensor.content is not None and tensor.content.contentPropertiesType == audio:
                found.append((1, 3, 0))
        files(graph.associatedFiles)
        for field, version in (("inputProcessUnits", (1, 1, 0)), ("outputProcessUnits", (1, 1, 0))):
            if getattr(graph, field) is not None:
                found.append(version)
                units(getattr(graph, field))
        later = (("inputTensorGroups", (1, 2, 0)), ("outputTensorGroups", (1, 2, 0)), ("customMetadata", (1, 5, 0)))
        for field, version in later:
            if getattr(graph, field) is not None:
                found.append(version)
    files(metadata.associatedFiles)
    return ".".join(map(str, max(found)))


def read_metadata(model_bytes):
    """The model's TFLITE_METADATA as add_metadata's dict, plus "min_parser_version"; None when the model has
    none. Every key is present (None where unset; each tensor has name, description, range as floats,
    content, dimension_names, and color_space when its content is "image"), tensors in the subgraph's order.

    Args:
        model_bytes: bytes. A .tflite flatbuffer.
    """
    buffer = metadata_buffers(model_bytes).get(METADATA_NAME)
    if buffer is None:
        return None
    if not _meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        raise ValueError("The TFLITE_METADATA buffer does not have the metadata identifier M001.")
    root = _meta_fb.ModelMetadata.GetRootAs(buffer, 0)
    result = {key: _text(getattr(root, key.capitalize())()) for key in _ROOT_KEYS}
    if root.SubgraphMetadataLength() != 1:
        raise ValueError(f"Expected one SubGraphMetadata, found {root.SubgraphMetadataLength()}.")
    graph = root.SubgraphMetadata(0)
    result["inputs"] = [_read_tensor(graph.InputTensorMetadata(i)) for i in range(graph.InputTensorMetadataLength())]
    result["outputs"] = [_read_tensor(graph.OutputTensorMetadata(i)) for i in range(graph.OutputTensorMetadataLength())]
    result["min_parser_version"] = _text(root.MinParserVersion())
    return result


def _read_tensor(tensor):
    item = {"name": _text(tensor.Name()), "description": _text(tensor.Description()), "range": None}
    stats = tensor.Stats()
    if stats is not None and stats.MinLength() and stats.MaxLength():
        item["range"] = [float(stats.Min(0)), float(stats.Max(0))]
    content, space = None, None
    holder = tensor.Content()
    if holder is not None:
        kind = holder.ContentPropertiesType()
        if kind == _meta_fb.ContentProperties.FeatureProperties:
            content = "feature"
        elif kind == _meta_fb.ContentProperties.ImageProperties:
            content = "image"
            table = holder.ContentProperties()
            image = _meta_fb.ImageProperties()
            image.Init(table.Bytes, table.Pos)
            names = {v: k for k, v in vars(_meta_fb.ColorSpaceType).items() if not k.startswith("_")}
            space = names.get(image.ColorSpace())
        elif kind != _meta_fb.ContentProperties.NONE:
            content = {v: k for k, v in vars(_meta_fb.ContentProperties).items() if not k.startswith("_")}.get(kind)
    item["content"] = content
    if content == "image":
        item["color_space"] = space
    count = tensor.DimensionNamesLength()
    item["dimension_names"] = [tensor.DimensionNames(i).decode() for i in range(count)] if count else None
    return item
