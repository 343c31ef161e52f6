/* synthetic_tokenizer.S: embeds the trained SentencePiece model that
 * `mmmamba mkmodel` writes into synthetic checkpoints (regenerate it with
 * synthetic_tokenizer/train.sh). Read through mm_synthetic_tokenizer(). */
    .section .rodata
    .balign 16
    .global mm_synthetic_tokenizer_begin
mm_synthetic_tokenizer_begin:
    .incbin "synthetic_tokenizer/tokenizer.model"
    .global mm_synthetic_tokenizer_end
mm_synthetic_tokenizer_end:
    .byte 0
    .section .note.GNU-stack,"",@progbits
