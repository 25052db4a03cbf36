"""Reusable, serializable Keras layers: import them into any Keras model.

Every layer here is registered under the ``rnnapps`` package, so a model that
uses one reloads with plain ``keras.saving.load_model`` once ``rnnapps.models``
is imported.

* sequences: :class:`RecurrentStack`, :class:`SequencePooling`, :class:`ClipSequenceLength`,
  :class:`VariationalLSTMCell` (recurrent dropout that keeps the fused LSTM step)
* tagging: :class:`CRF` (+ :func:`crf_loss`), :class:`CharWordEncoder`, :class:`TokenFeatures`,
  :class:`SequenceTagger`, :class:`UnknownWordDropout`,
  :class:`PartlyFrozenEmbedding` (pretrained rows that stay fixed)
* translation: :class:`BahdanauAttention`, :class:`LuongAttention`,
  :class:`AttentionDecoderCell`, :class:`AttentionDecoder`, :func:`greedy_decode`,
  :func:`beam_search_decode`, :class:`Translator`
* autoencoders: :class:`Seq2SeqAutoencoder` (pre-trains sentiment's encoder)
* language models: :func:`build_char_lm`, :class:`TruncatedBPTTModel`, :class:`CharTextModel`,
  :func:`generate_text`, :func:`sample_next`, :func:`generate_tokens`
* images: :class:`MaskedConv2D`, :class:`RowLSTM`, :func:`build_pixel_rnn` (+ :func:`bernoulli_nll`,
  :func:`complete_images`) (PixelRNN), :class:`AttentionReader`, :class:`AttentionWriter`,
  :class:`DrawCell`, :class:`DrawModel`, :func:`build_draw` (DRAW)
"""

from rnnapps.models.attention import BahdanauAttention, LuongAttention
from rnnapps.models.attention_decoder import AttentionDecoder, AttentionDecoderCell
from rnnapps.models.autoencoder import Seq2SeqAutoencoder
from rnnapps.models.char_encoder import CharWordEncoder
from rnnapps.models.char_lm import (
    ResetStatesAtEpochStart,
    ResetStatesEvery,
    TruncatedBPTTModel,
    build_char_lm,
)
from rnnapps.models.char_text import CharTextModel, generate_text
from rnnapps.models.crf import CRF, crf_loss
from rnnapps.models.decoding import beam_search_decode, greedy_decode
from rnnapps.models.draw import AttentionReader, AttentionWriter, DrawCell, DrawModel, build_draw
from rnnapps.models.embedding import PartlyFrozenEmbedding
from rnnapps.models.pixel_rnn import (
    MaskedConv2D,
    RowLSTM,
    bernoulli_nll,
    build_pixel_rnn,
    complete_images,
)
from rnnapps.models.recurrent import (
    CELL_TYPES,
    RecurrentStack,
    SequencePooling,
    VariationalLSTMCell,
)
from rnnapps.models.sampling import generate_tokens, sample_next
from rnnapps.models.sequence import ClipSequenceLength
from rnnapps.models.tagger import SequenceTagger, TokenFeatures
from rnnapps.models.translator import Translator
from rnnapps.models.word_dropout import UnknownWordDropout

__all__ = [
    "CELL_TYPES",
    "CRF",
    "AttentionDecoder",
    "AttentionDecoderCell",
    "AttentionReader",
    "AttentionWriter",
    "BahdanauAttention",
    "CharTextModel",
    "CharWordEncoder",
    "ClipSequenceLength",
    "DrawCell",
    "DrawModel",
    "LuongAttention",
    "MaskedConv2D",
    "PartlyFrozenEmbedding",
    "RecurrentStack",
    "ResetStatesAtEpochStart",
    "ResetStatesEvery",
    "RowLSTM",
    "SequencePooling",
    "SequenceTagger",
    "Seq2SeqAutoencoder",
    "TokenFeatures",
    "Translator",
    "TruncatedBPTTModel",
    "UnknownWordDropout",
    "VariationalLSTMCell",
    "beam_search_decode",
    "bernoulli_nll",
    "build_char_lm",
    "build_draw",
    "build_pixel_rnn",
    "complete_images",
    "crf_loss",
    "generate_text",
    "generate_tokens",
    "greedy_decode",
    "sample_next",
]
